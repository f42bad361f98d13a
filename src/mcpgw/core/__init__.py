"""The gateway core: its upstreams and catalog at run time, and the one forward pipeline every
request goes through."""
