"""Bridging the protocol eras: what a call needs when client and upstream speak different
revisions (client input requested mid-call, roots that stay the gateway's to answer)."""
