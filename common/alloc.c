/* alloc: being written */
