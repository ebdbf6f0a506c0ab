/* fsutil: being written */
