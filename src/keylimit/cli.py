"""The ``keylimit`` command (also ``python -m keylimit``).

    keylimit keys create --account ID --name NAME [--type sdk|api] [--scope S]... [--expires-at T]
    keylimit keys list --account ID
    keylimit keys revoke --account ID KEY_ID
    keylimit accounts set-plan ID PLAN [--rpm N] [--prompt-tpm N] [--completion-tpm N]
    keylimit accounts show ID
    keylimit demo [--host H] [--port P]
    keylimit proxy --upstream URL [--host H] [--port P] [--upstream-api-key-env VAR]

Settings come from the same ``KEYLIMIT_*`` variables as the server's (``Config.from_env``).
Answers are JSON on stdout; an error is one line on stderr, with exit status 2 for a bad
command line or argument value and 1 for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from types import ModuleType
from typing import Any, NoReturn

from ._errors import BadRequest, ConfigurationError, HTTPError, KeylimitError, NotFound, StorageUnavailable
from ._models import KeyType, Limits, Scope
from .config._build import key_manager
from .config._config import Config
from .management._manager import KeyManager
from .management._shapes import account_json, created_json, list_json, parse_expires_at, revoked_json

PROG = "keylimit"
USAGE_ERROR = 2

Command = Callable[[KeyManager, argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]
Serve = Callable[[argparse.Namespace, Config], int]
UPSTREAM_API_KEY_VAR = "KEYLIMIT_UPSTREAM_API_KEY"


class UsageError(Exception):
    """A bad command line: exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: the message and where to look.
        raise UsageError(f"{message} (see '{self.prog} --help')")


async def _create(manager: KeyManager, args: argparse.Namespace) -> dict[str, Any]:
    record, token = await manager.create_key(
        args.account,
        args.name,
        key_type=KeyType(args.type),
        scopes=[Scope(s) for s in (args.scope or [Scope.FULL.value])],
        expires_at=parse_expires_at(args.expires_at),
    )
    return created_json(record, token)


async def _list(manager: KeyManager, args: argparse.Namespace) -> dict[str, Any]:
    return list_json(await manager.list_keys(args.account))


async def _revoke(manager: KeyManager, args: argparse.Namespace) -> dict[str, Any]:
    record = await manager.revoke_key(args.account, args.key_id)
    if record is None:
        raise NotFound(f"account {args.account!r} has no key with that id")
    return revoked_json(record)


async def _set_plan(manager: KeyManager, args: argparse.Namespace) -> dict[str, Any]:
    given = (args.rpm, args.prompt_tpm, args.completion_tpm)
    limits: Limits | None = None
    if args.plan in manager.plans and any(n is not None for n in given):
        base = manager.plans.get(args.plan)
        if base is None and None in given:
            raise UsageError(
                f"plan {args.plan!r} has no limits of its own: give --rpm, --prompt-tpm and --completion-tpm"
            )
        defaults = base.as_tuple() if base is not None else (0, 0, 0)
        limits = Limits(*(d if n is None else n for n, d in zip(given, defaults, strict=True)))
    return account_json(manager, await manager.set_plan(args.account, args.plan, limits))


async def _show(manager: KeyManager, args: argparse.Namespace) -> dict[str, Any]:
    return account_json(manager, await manager.get_account(args.account))


def _uvicorn() -> ModuleType:
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError("serving needs uvicorn: pip install 'keylimit[server]'") from None
    return uvicorn


def _demo(args: argparse.Namespace, config: Config) -> int:
    from .demo import banner, demo_config, demo_server_app, ensure_demo_key

    uvicorn = _uvicorn()
    served = demo_config(config)
    key = asyncio.run(ensure_demo_key(served))
    generated = config.admin_token is None
    print(banner(key, served, host=args.host, port=args.port, admin_token_generated=generated), flush=True)
    uvicorn.run(demo_server_app(served), host=args.host, port=args.port, log_level="info")
    return 0


def _proxy(args: argparse.Namespace, config: Config) -> int:
    from ._protect import Protect
    from .proxy._app import proxy_app

    uvicorn = _uvicorn()
    if importlib.util.find_spec("httpx") is None:
        raise ConfigurationError("the proxy needs httpx: pip install 'keylimit[proxy]'")
    api_key = os.environ.get(args.upstream_api_key_env) or None
    try:
        upstream = proxy_app(args.upstream, upstream_api_key=api_key)
    except ConfigurationError as exc:
        message = str(exc).replace("upstream_api_key:", f"{args.upstream_api_key_env}:")
        raise UsageError(message) from None
    print(f"keylimit proxy: http://{args.host}:{args.port}/ -> {upstream.upstream}", flush=True)
    uvicorn.run(Protect(upstream, config), host=args.host, port=args.port, log_level="info")
    return 0


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number, zero or more, not {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="API keys and plan-aware rate limits for ASGI inference servers.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)

    keys = commands.add_parser("keys", help="create, list and revoke API keys").add_subparsers(
        dest="action", metavar="ACTION", parser_class=_Parser, required=True
    )
    create = keys.add_parser("create", help="create a key and print it (the only time it is shown)")
    create.add_argument("--account", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--type", choices=[t.value for t in KeyType], default=KeyType.SDK.value)
    create.add_argument(
        "--scope", action="append", choices=[s.value for s in Scope], help="repeat for several (default: full)"
    )
    create.add_argument("--expires-at", help="Unix seconds or ISO 8601, like 2030-01-01T00:00:00Z")
    create.set_defaults(run=_create)
    list_ = keys.add_parser("list", help="list an account's keys (never the keys themselves)")
    list_.add_argument("--account", required=True)
    list_.set_defaults(run=_list)
    revoke = keys.add_parser("revoke", help="revoke a key (idempotent)")
    revoke.add_argument("--account", required=True)
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(run=_revoke)

    accounts = commands.add_parser("accounts", help="show accounts and set their plans").add_subparsers(
        dest="action", metavar="ACTION", parser_class=_Parser, required=True
    )
    set_plan = accounts.add_parser("set-plan", help="set an account's plan (and its own limits)")
    set_plan.add_argument("account", metavar="ID")
    set_plan.add_argument("plan", metavar="PLAN")
    set_plan.add_argument("--rpm", type=_count, help="requests per window")
    set_plan.add_argument("--prompt-tpm", type=_count, help="prompt tokens per window")
    set_plan.add_argument("--completion-tpm", type=_count, help="completion tokens per window")
    set_plan.set_defaults(run=_set_plan)
    show = accounts.add_parser("show", help="an account's plan and effective limits")
    show.add_argument("account", metavar="ID")
    show.set_defaults(run=_show)

    demo = commands.add_parser("demo", help="an OpenAI-compatible demo server behind keylimit")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(serve=_demo)
    proxy = commands.add_parser("proxy", help="a reverse proxy that puts keylimit in front of any server")
    proxy.add_argument("--upstream", required=True)
    proxy.add_argument("--host", default="127.0.0.1")
    proxy.add_argument("--port", type=int, default=8000)
    proxy.add_argument(
        "--upstream-api-key-env",
        metavar="VAR",
        default=UPSTREAM_API_KEY_VAR,
        help=f"environment variable holding the upstream's API key (default: {UPSTREAM_API_KEY_VAR})",
    )
    proxy.set_defaults(serve=_proxy)
    return parser


async def _run(command: Command, args: argparse.Namespace, config: Config) -> dict[str, Any]:
    manager = key_manager(config)
    try:
        return await command(manager, args)
    finally:
        await manager.store.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        config = Config.from_env(os.environ)
        serve: Serve | None = getattr(args, "serve", None)
        if serve is not None:
            return serve(args, config)
        answer = asyncio.run(_run(args.run, args, config))
    except UsageError as exc:
        return _fail(str(exc), USAGE_ERROR)
    except BadRequest as exc:
        return _fail(exc.message, USAGE_ERROR)
    except HTTPError as exc:
        return _fail(exc.message, 1)
    except (ConfigurationError, StorageUnavailable, KeylimitError) as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback; the type says where to look
        return _fail(f"unexpected {type(exc).__name__}: {exc}", 1)
    json.dump(answer, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return status
