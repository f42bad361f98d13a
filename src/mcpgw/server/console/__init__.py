"""The admin web console: server-rendered pages at `/admin` on the HTTP transport (and `mcpgw admin`).

No front-end build step: HTML from Python, one small script for the live traffic stream, charts
as inline SVG. Its modules, one concept each:

    access      who may use it (loopback without [auth], else a token with the admin scope),
                browser sessions, and the origin and CSRF checks on every POST
    context     `Console`: the gateway it shows, its files, audit reads, action rows
    layout      the page shell, navigation, style and escaping
    servers     the Servers page; enable, disable, restart, add a server
    personas    the Personas page: each persona's catalog, what is withheld or warned and why
    traffic     the Traffic page: filtered audit rows, live over server-sent events; a request's detail
    spend       the Spend page: sampling tokens and cost per persona and route, against budgets
    charts      inline SVG bar charts
    trust       the Trust page: pending pin changes as diffs with approve buttons; poisoning findings
    app         the routes, and the login form
    standalone  `mcpgw admin`: the console beside a gateway that serves over stdio
"""

from mcpgw.server.console.app import console_app
from mcpgw.server.console.context import Console

__all__ = ["Console", "console_app"]
