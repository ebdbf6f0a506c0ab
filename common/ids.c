/* ids: being written */
