"""Reading configuration from the environment (12-factor) and deriving URLs."""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse, urlunparse

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use one of {sorted(TRUE_WORDS | FALSE_WORDS)})")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_amounts(name: str) -> dict[str, Decimal]:
    """``"USDT=10000,BTC=0.5"`` as {"USDT": Decimal("10000"), "BTC": Decimal("0.5")} (codes upper-cased)."""
    amounts = {}
    for item in env_list(name, []):
        code, _, value = item.partition("=")
        try:
            amount = Decimal(value.strip())
        except ArithmeticError:
            amount = Decimal("NaN")
        if not code.strip() or not amount.is_finite() or amount < 0:
            raise ValueError(f"{name}: {item!r} is not CODE=non-negative amount")
        amounts[code.strip().upper()] = amount
    return amounts


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def database_settings(url: str) -> dict:
    """Django DATABASES entry for a ``postgres://`` / ``postgresql://`` URL.

    The host may be a unix socket folder, either as ``?host=/path`` (libpq
    style, what pgserver prints) or percent-encoded in the netloc.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql", "pgsql"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got scheme {parsed.scheme!r}")
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    host = query.pop("host", None) or unquote(parsed.hostname or "")
    options = {key: value for key, value in query.items() if key in ("sslmode", "sslrootcert", "application_name")}
    return {
        "ENGINE": "django_prometheus.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or query.get("port") or 5432),
        "OPTIONS": options,
    }


def database_url(database: dict) -> str:
    """The ``postgresql://`` URL of a Django DATABASES entry (``database_settings``
    read backwards), for a child process that must reach the same database, the
    test database included: ``NAME`` is read from the entry, not from
    ``DATABASE_URL``. The host goes in the query (libpq style: a socket folder
    or a network address alike); ``application_name`` stays out, so the child
    names itself."""
    query = {"host": database["HOST"], "port": database["PORT"]}
    query.update({key: value for key, value in database.get("OPTIONS", {}).items()
                  if key in ("sslmode", "sslrootcert")})
    return (f"postgresql://{quote(database['USER'], safe='')}:{quote(database['PASSWORD'], safe='')}"
            f"@/{quote(database['NAME'], safe='')}?{urlencode(query)}")


def process_role(argv: list[str]) -> str:
    """What this process is, for PostgreSQL's ``application_name`` (pg_stat_activity,
    the server's logs): the web tier, a Celery process, or the management command."""
    program = argv[0] if argv else ""
    if program.endswith(("exchange/server.py", "exchange.server")):
        return "exchange:web"
    if "celery" in program:
        return "exchange:celery"
    if program.endswith("manage.py") and len(argv) > 1:
        return f"exchange:{argv[1]}"[:63]
    return "exchange"


def redis_url_with_db(url: str, db: int) -> str:
    """The same Redis server as ``url`` but logical database ``db``."""
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        query = parse_qs(parsed.query)
        query["db"] = [str(db)]
        # urlunparse would drop the empty authority and print "unix:/path".
        return f"unix://{parsed.path}?{urlencode(query, doseq=True)}"
    if parsed.scheme in ("redis", "rediss"):
        return urlunparse(parsed._replace(path=f"/{db}"))
    raise ValueError(f"REDIS_URL must be redis://, rediss:// or unix://, got {url!r}")


@lru_cache(maxsize=16)
def redis_db_of(url: str) -> int:
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        return int(parse_qs(parsed.query).get("db", ["0"])[-1])
    return int(parsed.path.lstrip("/") or 0)


def celery_redis_url(url: str, db: int) -> str:
    """Kombu spells a unix-socket Redis ``redis+socket://path?virtual_host=N``."""
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        return f"redis+socket://{parsed.path}?virtual_host={db}"
    return redis_url_with_db(url, db)
