"""The gateway core: its upstreams and catalog at run time, the one forward pipeline every
request goes through, and what a registry reload changes (`reload`)."""
