"""Bridging the protocol eras: what a call needs when client and upstream speak different revisions.

`Bridge.request` (`calls`) is the one way the gateway sends a call that may need
client input on its way: it decides where each question an upstream asks
goes (the sampler, the registry's roots, or the client, in the client's era),
`exchange` holds a handshake-era upstream's call open for a 2026-07-28 client,
`state` seals every `requestState` handed to a client to that client and call,
and `channel` describes the client behind one request.
"""

from mcpgw.bridge.calls import Bridge as Bridge
