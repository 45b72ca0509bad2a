"""Images, the boot loader and the `malv` command line."""
