"""distgan on Flower: a ServerApp whose main loop is the coordinator, a ClientApp per party.

``server.py``   the ServerApp (``server_app``): run config -> :func:`distgan.training.train`
``parties.py``  ``FlowerParties``: the Parties handle over Flower messages
``client.py``   the ClientApp (``client_app``): one message, one :meth:`Party.handle`
``apps.py``     the app folder ``flwr run`` submits (its pyproject.toml names the two above)
``simulation.py``  Flower's simulation engine on Ray, here or on a cluster
``coarse.py``   coarse rounds: the default local_steps of a deployed run
``node.py``     node config -> which party, which data, which state folder
``records.py``  protocol messages <-> Flower records
``local.py``    ``distgan flower local``: SuperLink and SuperNodes on loopback, TLS and node auth
``tls.py``      self-signed CA, server certificate, SuperNode keys
``resident.py`` resident party processes on a SuperNode (``--isolation process``): no process per message

Flower's telemetry and update check are off unless the environment turns them on, and SuperExec
polls for tasks every 0.25 s; set here, before anything imports flwr (it reads them at import
time), and passed to every Flower process distgan starts.
"""

import os

FLOWER_ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    # The SuperLink would otherwise `uv sync` the app's dependencies for every run; the party's
    # environment already has distgan.
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    # SuperExec (the SuperLink's, for the ServerApp; a node's, for per-message ClientApps) looks for
    # new tasks every second by default; a resident node backs off to this interval when idle.
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.25",
}
for _name, _value in FLOWER_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
