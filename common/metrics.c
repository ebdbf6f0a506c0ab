/* metrics: being written */
