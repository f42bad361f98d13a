"""What both transports do around serving: the log on stderr, drain on signals, the persona check.

Owns: the gateway's log setup (stderr, since on stdio stdout is the MCP
channel; its formats are in `observe.logs`), the shutdown on SIGTERM, SIGINT
or SIGHUP (drain in-flight requests up to `[gateway] drain_grace`, a second
signal stops at once), and the check that every persona resolves once the
upstreams have started.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import anyio

from mcpgw.core.gateway import Gateway
from mcpgw.observe import logs
from mcpgw.observe.logs import LogFormat

logger = logging.getLogger("mcpgw.server")


async def stop_on_signals(gateway: Gateway, stop: Callable[[], None]) -> None:
    """On SIGTERM, SIGINT or SIGHUP: drain in-flight requests up to the grace period, then `stop()`.

    A second signal during the drain stops at once.
    """
    grace = gateway.registry.gateway.drain_grace
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            logger.info("received %s; shutting down", signal.Signals(signum).name)
            async with anyio.create_task_group() as tg:

                async def on_second_signal() -> None:
                    async for _ in signals:
                        logger.info("second signal: stopping without waiting for in-flight requests")
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(on_second_signal)
                left = await gateway.drain(grace)
                if left:
                    logger.warning("%d request(s) still in flight after %gs; stopping them", left, grace)
                tg.cancel_scope.cancel()
            stop()
            return


async def check_personas(gateway: Gateway) -> None:
    """Once upstreams have started, every persona must resolve; a broken one stops the gateway."""
    await gateway.wait_started()
    for warning in gateway.check_personas():
        logger.warning("%s", warning)


def stderr_logging(level: int = logging.INFO, *, fmt: LogFormat = "text") -> None:
    """The gateway's log goes to stderr (on stdio, stdout is the MCP channel): see `observe.logs`."""
    logs.configure(level, fmt=fmt)
