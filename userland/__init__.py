"""Programs that run on the kernel: init, the shell, coreutils and workloads."""
