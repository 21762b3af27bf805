"""One module per area of the console command; each adds its subparsers with `register`."""
