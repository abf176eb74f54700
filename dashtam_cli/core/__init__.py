"""dashtam's core library: async, quiet (it logs, never prints), usable from any program."""
