"""distgan flower: run distgan on Flower, on this machine or across organisations.

  local      SuperLink + N SuperNodes on loopback (TLS and node auth), train, stop them all
  simulate   Flower's simulation engine (Ray), here or on a Ray cluster
  keys       CA and SuperLink certificate (and SuperNode keys) for a federation across hosts
  server-cert  a new SuperLink certificate for more host names, signed by the kept CA
  node-key   a data holder's own SuperNode key pair
  superlink  start the SuperLink (coordinator's host) with distgan's settings
  supernode  start one party's SuperNode (data holder's host) with its data folder
  app        write the Flower app folder of a run, for  flwr run APP CONNECTION
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distgan.cli.common import COMMANDS, Command, CommandError, non_negative_int, positive_int
from distgan.cli.train import add_config_arguments, config_from_args, resolve_run, resumed_config
from distgan.config import Config

DESCRIPTION = """\
Run distgan on Flower (https://flower.ai): a ServerApp whose main loop is distgan's coordinator,
one SuperNode per data holder. Every data holder's SuperNode reads only its own data.

Examples:
  distgan flower local --parties 2 --rounds 20
  distgan flower local --parties 2 --party-data mnist:/data/a --party-data mnist:/data/b
  distgan flower simulate --parties 100 --split iid --ray-address auto
  distgan flower keys --out fed-keys --host 203.0.113.5 --nodes 3
  distgan flower superlink --keys fed-keys --host 203.0.113.5 --port 9092 --database superlink.db
  distgan flower supernode --superlink 203.0.113.5:9092 --ca ca.crt --key supernode-0 \\
      --party 0 --parties 3 --data folder:/data/xrays
  distgan flower app --out app --run-dir runs/fed-1 --parties 3 --strategy avg-output

--rounds means what it means in distgan train, on every runtime: rounds of --local-steps D and G
steps per party message (G steps in all: rounds x local_steps, x parties for round-robin). Flower
never packs more steps into a message: for avg-output, md-gan and round-robin that changes the
algorithm (measured: avg-output at 334 steps per message collapses). A message may carry at most
D_BUDGET MiB of generated images; a run whose messages would not fit is refused.
"""


@dataclass(frozen=True)
class Action:
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    summary: str


ACTIONS: dict[str, Action] = {}


def action(name: str, summary: str, configure: Callable[[argparse.ArgumentParser], None]) -> \
        Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        ACTIONS[name] = Action(configure, run, summary)
        return run

    return register


# -- shared option groups -------------------------------------------------------------------------
def _transport_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Flower")
    group.add_argument("--reply-timeout", type=float, default=None, metavar="S",
                       help="seconds before a silent party counts as failed (0: wait; default 900); "
                            "runtime.on_party_failure decides between going on without it and stopping")
    group.add_argument("--discovery-timeout", type=float, default=None, metavar="S",
                       help="seconds to wait for every party's SuperNode to join (default 600)")


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from distgan.runtime.flower.parties import FlowerSettings

    defaults = FlowerSettings()
    reply = defaults.reply_timeout_s if args.reply_timeout is None else (args.reply_timeout or None)
    discovery = defaults.discovery_timeout_s if args.discovery_timeout is None else args.discovery_timeout
    return FlowerSettings(reply_timeout_s=reply, discovery_timeout_s=discovery)


def _clientapp_option(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    group.add_argument("--clientapp", choices=["resident", "per-message"], default="resident",
                       help="resident: one party process per run on each SuperNode keeps the party in memory "
                            "(flwr 1.42's task API; other Flower versions fall back, with a log line); "
                            "per-message: Flower starts a ClientApp process for every message (default resident). "
                            "With resident parties, DISTGAN_SUPERNODE_POLL=S in the environment shortens the "
                            "SuperNode's hard-coded 3 s / 0.5 s waits to S (a run-time patch of flwr 1.42; README)")


def _run_options(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, metavar="RUN_DIR", help="the run folder (default: runs/<NNNNN>-...)")
    out.add_argument("--overwrite", action="store_true", help="replace RUN_DIR if it exists and is not empty")
    out.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    _transport_options(parser)


def deployment_config(args: argparse.Namespace, party_data: list[str] | None = None) -> Config:
    """The config of ``args``, as ``distgan train`` reads it (the same rounds, the same steps per
    message), refused when its messages would not fit Flower's message budget (sized by the image
    shape of the data: the configured source, or the first party's own data)."""
    from distgan.runtime.flower.coarse import check_message_budget

    config = config_from_args(args)
    if party_data and config.data.labels is None:
        config = _with_party_label_map(config, party_data)
    try:
        image_shape = _image_shape(config, party_data[0] if party_data else None)
    except (ValueError, OSError) as error:
        if party_data:
            raise CommandError(f"--party-data {party_data[0]}: {error}") from None
        return config  # flower app: the data lives on the SuperNodes' hosts; they check it when they join
    try:
        check_message_budget(config, image_shape)
    except ValueError as error:
        raise CommandError(str(error)) from None
    return config


def _with_party_label_map(config: Config, party_data: list[str]) -> Config:
    """Declare the label map of parties whose data are labelled image folders on this machine: the
    union of their subfolder names (numbers in numeric order), so folder ``7`` is label 7 at every
    party instead of each party numbering its own folders from 0."""
    from distgan.data.sources import folder_label_names
    from distgan.runtime.flower.node import source_spec

    names: set[str] = set()
    for spec in party_data:
        name, _, arg = source_spec(spec).partition(":")
        if name == "folder" and arg:
            try:
                names.update(folder_label_names(Path(arg)))
            except ValueError as error:
                raise CommandError(f"--party-data {spec}: {error}") from None
    if not names:
        return config
    ordered = sorted(names, key=lambda n: (0, int(n), n) if n.isdigit() else (1, 0, n))
    return dataclasses.replace(config, data=dataclasses.replace(config.data, labels=tuple(ordered)))


def _image_shape(config: Config, party_source: str | None) -> tuple[int, int, int]:
    from distgan.assembly import plan_data
    from distgan.data import load_source
    from distgan.models import natural_image_size
    from distgan.runtime.flower.node import source_spec

    if party_source is None:
        return plan_data(config).data.shape
    return load_source(source_spec(party_source), config.data.image_size or natural_image_size(config.model)).shape


def _run_folder(args: argparse.Namespace, new_config: Callable[[], Config]) -> tuple[Config, Path, bool]:
    """``distgan train``'s rule (:func:`~distgan.cli.train.resolve_run`): --resume continues a run with
    its own config, refusing options that differ from it (--rounds may extend it)."""
    run = resolve_run(args, new_config)
    if run.resume:
        from distgan import run_folder

        run_folder.write_config(run.run_dir, run.config)  # --rounds may have extended it
    return run.config, run.run_dir, run.resume


# -- local -----------------------------------------------------------------------------------------
def _configure_local(parser: argparse.ArgumentParser) -> None:
    _run_options(parser)
    group = parser.add_argument_group("federation")
    group.add_argument("--party-data", action="append", metavar="SPEC",
                       help="one per party, in order: the data-dir of that party's SuperNode (mnist:DIR, "
                            "folder:DIR, ...); default: split the configured source as distgan train does")
    group.add_argument("--insecure", action="store_true",
                       help="no TLS and no SuperNode authentication (default: both on)")
    group.add_argument("--quiet", action="store_true", help="no progress lines (log.txt keeps them)")
    _clientapp_option(group)


@action("local", "train on a SuperLink and one SuperNode per party on this machine (TLS, node auth)",
        _configure_local)
def _local(args: argparse.Namespace) -> int:
    from distgan.runtime.flower.local import FlowerLaunchError, run_local

    config, run_dir, resume = _run_folder(args, lambda: deployment_config(args, args.party_data))
    print(f"Flower run: {config.data.parties} parties, {config.train.rounds} rounds of "
          f"{config.train.local_steps} local steps; run folder {run_dir}", file=sys.stderr)
    try:
        record = run_local(config, run_dir, args.party_data, secure=not args.insecure, resume=resume,
                           settings=_settings(args), echo=None if args.quiet else sys.stderr,
                           resident=args.clientapp == "resident")
    except FlowerLaunchError as error:
        print(f"distgan flower local: {error}", file=sys.stderr)
        return 1
    print(f"Flower run {record.get('run-id')} {record.get('status')}")
    print(f"run folder: {run_dir}")
    return 0


# -- simulate ----------------------------------------------------------------------------------------
def _configure_simulate(parser: argparse.ArgumentParser) -> None:
    _run_options(parser)
    group = parser.add_argument_group("Ray")
    group.add_argument("--ray-address", metavar="ADDR",
                       help="join a Ray cluster (auto: the one this host is part of); default: Ray on this machine")
    group.add_argument("--cpus-per-party", type=float, default=1.0, metavar="N",
                       help="CPU cores per virtual SuperNode (default 1)")
    group.add_argument("--gpus-per-party", type=float, default=None, metavar="F",
                       help="GPU share per virtual SuperNode (default: 1/parties when the parties run on CUDA, "
                            "else 0; Ray hides the GPU from a node that reserves none)")


@action("simulate", "train on Flower's simulation engine (Ray), here or on a Ray cluster", _configure_simulate)
def _simulate(args: argparse.Namespace) -> int:
    from distgan.runtime.flower.simulation import RayResources, simulate

    config, run_dir, resume = _run_folder(args, lambda: config_from_args(args))
    simulate(config, run_dir, RayResources(args.cpus_per_party, args.gpus_per_party, args.ray_address),
             resume=resume, settings=_settings(args))
    print(f"run folder: {run_dir}")
    return 0


# -- app ------------------------------------------------------------------------------------------
def _configure_app(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="APP_DIR", help="folder to write the app into")
    parser.add_argument("--run-dir", type=Path, required=True, metavar="RUN_DIR",
                        help="the run folder on the SuperLink's host (the ServerApp writes there)")
    parser.add_argument("--resume", action="store_true",
                        help="continue RUN_DIR from its checkpoint with its own config (--rounds may extend it)")
    _transport_options(parser)


@action("app", "write the Flower app folder of a run (then: flwr run APP_DIR CONNECTION)", _configure_app)
def _app(args: argparse.Namespace) -> int:
    from distgan.runtime.flower.apps import write_app

    if args.resume:  # continue the run with its own config (only --rounds may extend it)
        config = resumed_config(args, args.run_dir)
    else:
        config = deployment_config(args)
    path = write_app(args.out, config, args.run_dir, args.resume, _settings(args))
    print(f"wrote {path}; start the run with:  flwr run {args.out} <connection>")
    return 0


# -- keys -------------------------------------------------------------------------------------------
def _configure_keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the key material")
    parser.add_argument("--host", action="append", required=True, metavar="HOST",
                        help="address the SuperNodes dial (IP or DNS name; repeatable)")
    parser.add_argument("--nodes", type=non_negative_int, default=0, metavar="N",
                        help="SuperNode key pairs to make here (default 0: each data holder makes its own)")


@action("keys", "make the CA, SuperLink certificate and SuperNode keys of a federation", _configure_keys)
def _keys(args: argparse.Namespace) -> int:
    from distgan.runtime.flower.tls import make_node_key, make_server_certificates

    if args.out.exists() and any(args.out.iterdir()):
        raise CommandError(f"--out {args.out}: folder exists and is not empty; key material is never overwritten")
    certificates = make_server_certificates(args.out, args.host)
    for j in range(args.nodes):
        key = make_node_key(args.out, f"supernode-{j}")
        print(f"party {j}: give {key.private_key} and {certificates.ca_certificate} to its data holder; "
              f"register {key.public_key} with  flwr supernode register")
    print(f"SuperLink: {certificates.certificate} and {certificates.key} (keep the key on that host); the CA's key "
          f"{certificates.ca_certificate.with_name('ca.key')} signs new host names later (distgan flower server-cert): "
          "keep it safe, offline if you can")
    return 0


def _configure_server_cert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=Path, required=True, metavar="DIR",
                        help="folder made by distgan flower keys (holds ca.crt and ca.key)")
    parser.add_argument("--host", action="append", required=True, metavar="HOST",
                        help="every address the SuperNodes dial, old and new (IP or DNS name; repeatable)")


@action("server-cert", "sign a new SuperLink certificate for more host names with the kept CA (SuperNodes "
                       "keep their ca.crt)", _configure_server_cert)
def _server_cert(args: argparse.Namespace) -> int:
    from distgan.runtime.flower.tls import issue_server_certificate

    files = issue_server_certificate(args.keys, args.host)
    print(f"wrote {files.certificate} and {files.key} for {', '.join(args.host)}; restart the SuperLink with them")
    return 0


def _configure_node_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="private key file to write (FILE.pub gets the public key to send to the coordinator)")


@action("node-key", "make this data holder's SuperNode key pair (send only FILE.pub)", _configure_node_key)
def _node_key(args: argparse.Namespace) -> int:
    from distgan.runtime.flower.tls import make_node_key

    if args.out.exists():
        raise CommandError(f"--out {args.out}: exists; key material is never overwritten")
    key = make_node_key(args.out.parent, args.out.name)
    print(f"private key {key.private_key} (stays here); send {key.public_key} to the coordinator")
    return 0


# -- superlink / supernode ------------------------------------------------------------------------
def _configure_superlink(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=Path, metavar="DIR", help="folder made by distgan flower keys (TLS + node auth)")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP, no node auth (testing only)")
    parser.add_argument("--host", required=True,
                        help="address to listen on: the coordinator's address the SuperNodes dial, as the "
                             "certificate names it (0.0.0.0 listens on every interface: say so on purpose)")
    parser.add_argument("--port", type=positive_int, default=9092, help="port of all SuperLink APIs (default 9092)")
    parser.add_argument("--database", type=Path, metavar="FILE",
                        help="keep the SuperLink's state, node registrations included, in this SQLite file across "
                             "restarts (default: in memory; a restarted SuperLink then needs every key registered again)")
    parser.add_argument("--log-file", type=Path, help="SuperLink log file")


@action("superlink", "start the SuperLink with distgan's settings (replaces this process)", _configure_superlink)
def _superlink(args: argparse.Namespace) -> int:
    from distgan.runtime.flower.local import flower_executable

    command = [flower_executable("flower-superlink"), "--host", args.host, "--port", str(args.port),
               "--disable-runtime-dependency-installation"]
    if args.keys is not None:
        command += ["--ssl-ca-certfile", str(args.keys / "ca.crt"), "--ssl-certfile", str(args.keys / "server.pem"),
                    "--ssl-keyfile", str(args.keys / "server.key"), "--enable-supernode-auth"]
    elif args.insecure:
        command.append("--insecure")
    else:
        raise CommandError("give --keys DIR (TLS and node authentication) or, for a test, --insecure")
    if args.database is not None:
        command += ["--database", str(args.database.resolve())]
    if args.log_file is not None:
        command += ["--log-file", str(args.log_file)]
    return _exec(command)


def _configure_supernode(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--superlink", required=True, metavar="HOST:PORT", help="the SuperLink's address")
    parser.add_argument("--ca", type=Path, metavar="CA_CERT", help="the federation's CA certificate (TLS)")
    parser.add_argument("--key", type=Path, metavar="PRIVATE_KEY", help="this node's authentication key")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP (testing only)")
    parser.add_argument("--party", type=int, required=True, metavar="J", help="the party this node plays (0-based)")
    parser.add_argument("--parties", type=positive_int, required=True, metavar="N", help="parties in the run")
    parser.add_argument("--data", required=True, metavar="SPEC",
                        help="this party's own data: mnist:DIR, folder:DIR, or a folder of images")
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="where the party keeps its checkpoints (default: the system temp folder)")
    parser.add_argument("--port", type=positive_int, default=9094,
                        help="port of this node's local ClientApp API (default 9094; one per node on a host)")
    parser.add_argument("--privacy-floor", metavar="SPEC",
                        help="the least privacy this node accepts for its data, e.g. "
                             "'epsilon=10,delta=1e-5,max-grad-norm=1,mechanisms=dp-sgd': a run asking for less "
                             "(no DP, a larger epsilon, delta or C, another mechanism) is refused; epsilon is "
                             "the budget of this dataset over all runs, kept in one ledger under --state-dir "
                             "(required with a floor)")
    _clientapp_option(parser)


@action("supernode", "start one party's SuperNode with its own data: a quick restart rejoins (a refused "
                     "activation is retried while the SuperLink still counts the old node online), its "
                     "ClientApps end with it, and its exit says what happened", _configure_supernode)
def _supernode(args: argparse.Namespace) -> int:
    from distgan.runtime.flower.local import flower_executable, node_config_text

    node_config: dict[str, int | float | str] = {"partition-id": args.party, "num-partitions": args.parties,
                                         "data-dir": args.data}
    if args.state_dir is not None:
        node_config["state-dir"] = str(args.state_dir.resolve())
    if args.privacy_floor is not None:
        from distgan.runtime.flower.node import PrivacyFloor

        if args.state_dir is None:
            raise CommandError("--privacy-floor needs --state-dir: the node keeps its dataset's privacy ledger "
                               "there, across runs")
        try:
            node_config.update(PrivacyFloor.parse_option(args.privacy_floor))
        except ValueError as error:
            raise CommandError(str(error)) from None
    command = [flower_executable("flower-supernode"), "--superlink", args.superlink, "--port", str(args.port),
               "--node-config", node_config_text(node_config)]
    if args.ca is not None:
        command += ["--root-certificates", str(args.ca)]
    elif args.insecure:
        command.append("--insecure")
    else:
        raise CommandError("give --ca CA_CERT (TLS) or, for a test, --insecure")
    if args.key is not None:
        command += ["--auth-supernode-private-key", str(args.key)]
    if args.clientapp == "resident":
        from distgan.runtime.flower.resident import resident_supernode_command

        command = resident_supernode_command(command, f"127.0.0.1:{args.port}")
    from distgan.runtime.flower import FLOWER_ENVIRONMENT
    from distgan.runtime.flower.supervise import supervise

    print("$ " + " ".join(command), file=sys.stderr)
    return supervise(command, {**os.environ, **FLOWER_ENVIRONMENT})


def _exec(command: list[str]) -> int:
    from distgan.runtime.flower import FLOWER_ENVIRONMENT

    print("$ " + " ".join(command), file=sys.stderr)
    sys.stderr.flush()
    os.execve(command[0], command, {**os.environ, **FLOWER_ENVIRONMENT})
    return 0  # not reached


# -- the command ------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="flower_action", metavar="ACTION", required=True)
    for name, entry in ACTIONS.items():
        child = sub.add_parser(name, help=entry.summary, description=entry.summary,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        entry.configure(child)
        child.set_defaults(flower_run=entry.run)


def run(args: argparse.Namespace) -> int:
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise CommandError("Flower is not installed: pip install 'distgan[flower]'") from None
    return int(args.flower_run(args))


def _description() -> str:
    from distgan.runtime.flower.coarse import MESSAGE_BUDGET_BYTES

    return DESCRIPTION.replace("D_BUDGET", str(MESSAGE_BUDGET_BYTES // 2**20))


COMMANDS.register("flower", "run on Flower: local federation, simulation, or hosts of different organisations")(
    Command(configure, run, _description()))
