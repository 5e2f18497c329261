"""The admin listener: JSON API, OpenAPI document and dashboard over objects handed in.

- source.py: the `AdminSource` / `AdminControl` Protocols the API reads and drives, and the
  JSON shapes they return;
- access.py: bearer token, loopback rule, browser guards (pure);
- messages.py, api.py: requests, responses and the route table; openapi.py: its document;
- static.py + static/: the dashboard page; server.py: the asyncio HTTP/1.1 listener;
- views.py, in_process.py: the implementation over one in-process proxy's runtime;
- supervised.py: the implementation over the supervisor and the node's shared state.

This package must not know how bastion runs (supervisor, workers): it sees it only through
the Protocols. See docs/admin.md.
"""

from bastion.admin.api import AdminApi, Route
from bastion.admin.in_process import InProcessAdmin, start_local_admin
from bastion.admin.server import AdminServer
from bastion.admin.source import AdminControl, AdminSource
from bastion.admin.supervised import SupervisedAdmin, supervised_admin_server

__all__ = [
    "AdminApi",
    "AdminControl",
    "AdminServer",
    "AdminSource",
    "InProcessAdmin",
    "Route",
    "SupervisedAdmin",
    "start_local_admin",
    "supervised_admin_server",
]
