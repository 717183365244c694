"""GET a process's health or metrics port as a probe does: its status and body."""

import urllib.error
import urllib.request

# A probe that does not answer within this fails the test instead of hanging it.
TIMEOUT_SECONDS = 10.0


def get(url: str) -> tuple[int, bytes]:
    """The status and body of GET `url`; (0, b"") while nothing listens. A hang raises TimeoutError."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise exc.reason from exc
        return 0, b""
