/* rpc: being written */
