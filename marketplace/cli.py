"""The `relay` command: migrate, load data, create staff, serve."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from marketplace.settings import get_settings


def _migrate(_: argparse.Namespace) -> int:
    from marketplace.db.migrate import upgrade

    upgrade(get_settings().database_url)
    print("database is at the latest migration")
    return 0


def _seed(args: argparse.Namespace) -> int:
    from marketplace.db.session import get_database, unit_of_work
    from marketplace.demo.loader import load_people, load_taxonomy

    settings = get_settings()
    with unit_of_work(get_database(settings.database_url), settings) as session:
        result: dict[str, object] = {"taxonomy": load_taxonomy(session)}
        if args.demo:
            result["demo"] = load_people(session)
    print(json.dumps(result))
    return 0


def _create_staff(args: argparse.Namespace) -> int:
    from marketplace.db.models import Role
    from marketplace.db.session import get_database
    from marketplace.domain.accounts.services import create_account
    from marketplace.errors import DomainError

    password = os.environ.get("RELAY_STAFF_PASSWORD") or (
        sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
    )
    settings = get_settings()
    try:
        with get_database(settings.database_url).session() as session:
            account = create_account(session, args.email, password, Role.STAFF, args.name)
            print(f"staff account {account.email} created")
    except DomainError as exc:
        if args.if_missing and exc.status == 409:
            print(f"staff account {args.email} already exists")
            return 0
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run("marketplace.asgi:app", host=args.host, port=args.port, proxy_headers=True, log_level="info")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=_migrate)
    seed = sub.add_parser("seed", help="load the category taxonomy (and --demo people); idempotent")
    seed.add_argument("--demo", action="store_true")
    seed.set_defaults(fn=_seed)
    staff = sub.add_parser("create-staff", help="create a staff account (the only way to make one)")
    staff.add_argument("--email", required=True)
    staff.add_argument("--name", default="Staff")
    staff.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    staff.add_argument("--if-missing", action="store_true", help="succeed quietly if the account exists")
    staff.set_defaults(fn=_create_staff)
    serve = sub.add_parser("serve", help="serve the API, portal and (stub mode) the in-process worker")
    serve.add_argument("--host", default=os.environ.get("RELAY_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("RELAY_PORT", "8000")))
    serve.set_defaults(fn=_serve)
    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
