"""What both transports do around serving: the log on stderr, drain on signals, the persona check.

Owns: the gateway's log setup (stderr, since on stdio stdout is the MCP
channel), the shutdown on SIGTERM or SIGINT (drain in-flight requests up to
`[gateway] drain_grace`, a second signal stops at once), the registry reload
on SIGHUP (`server.reload`), and the check
that every persona resolves once the upstreams have started.
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


async def stop_on_signals(
    gateway: Gateway, stop: Callable[[], None], *, reload: Callable[[], None] | None = None
) -> None:
    """On SIGTERM or SIGINT: drain in-flight requests up to the grace period, then `stop()`.

    A second signal during the drain stops at once. SIGHUP calls `reload` (see `server.reload`);
    serving the shipped default registry, there is no file to reload, and SIGHUP is only logged.
    """
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if reload is None:
                    logger.info("received SIGHUP; serving the shipped default registry, nothing to reload")
                else:
                    logger.info("received SIGHUP; reloading the registry")
                    reload()
                continue
            logger.info("received %s; shutting down", signal.Signals(signum).name)
            grace = gateway.registry.gateway.drain_grace
            async with anyio.create_task_group() as tg:

                async def on_second_signal() -> None:
                    async for again in signals:
                        if again == signal.SIGHUP:
                            continue
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
