"""Settings for the test suite.

Embedded servers for tests live in their own folder so that a running
``make run`` and ``make test`` never share data (tests flush Redis).
"""

import os
from pathlib import Path

os.environ.setdefault(
    "EXCHANGE_DATA_DIR", str(Path(__file__).resolve().parent.parent.parent / "var" / "test")
)

from .base import *  # noqa: E402,F403
from .base import DATABASES  # noqa: E402

# Tests commit thousands of tiny transactions; durability of test data does
# not matter, and waiting for WAL flushes would dominate the run time.
DATABASES["default"]["OPTIONS"]["options"] = "-c synchronous_commit=off"
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("EXCHANGE_TEST_DATABASE", "test_exchange")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EXCHANGE_DEMO_PASSWORD = "demo-exchange-2026"
LOG_LEVEL = "WARNING"
LOGGING["root"]["level"] = "WARNING"  # noqa: F405

# Rate limits high enough that no test trips over another's requests; the
# throttling tests set their own low rates.
REST_FRAMEWORK = {  # noqa: F405
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_THROTTLE_RATES": {"anon": "100000/s", "user": "100000/s", "orders": "100000/s", "auth": "100000/s",
                               "auth_failures": "100000/s"},
}

# In-process tests drive a matcher by hand (run_once), so its heartbeat only
# moves when they do; on a loaded machine a test can outlast the 5 s
# production window between two calls. Tests of a dead matcher delete its
# heartbeat key instead of waiting for it to age.
MATCHER_STALE_AFTER_S = 60.0
