"""Credentials out of everything the pipeline prints or logs.

A tracking URI may carry a password (`http://user:password@host`, `postgresql://user:pw@db/x`),
and so may any URL a library puts into an error message (MLflow's REST client names the whole
request URL). `redact` masks the password part of a URL's user information and the values of
query parameters that are usually secrets, wherever they appear in a text; the logging setup
(cfqa.io.logs) applies it to every record, tracebacks included, and the CLI to the tracebacks it
writes itself. The user name stays: it tells which account was used without granting it.
"""
from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@  or  scheme://token@  (RFC 3986 userinfo: no "/", "@" or whitespace).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s/@:?#]*)(?::(?P<password>[^\s/@?#]*))?@")
# ?password=…, &token=…, &X-Amz-Signature=…: query parameters that usually hold a secret.
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:[\w.\-]*(?:password|passwd|pwd|secret|token|signature|credential|api[_-]?key|access[_-]?key)"
    r"[\w.\-]*)=)(?P<value>[^&#\s'\"]+)", re.IGNORECASE)


def _userinfo(match: re.Match) -> str:
    if match["password"] is None:           # a bare token before "@" (https://TOKEN@host)
        return f"{match['scheme']}{MASK}@" if match["user"] else match[0]
    return f"{match['scheme']}{match['user']}:{MASK}@"


def redact(text: str) -> str:
    """`text` with every URL's password (or bare token) and secret query values masked."""
    if "://" not in text and "=" not in text:
        return text
    return _SECRET_QUERY.sub(lambda m: m["key"] + MASK, _USERINFO.sub(_userinfo, text))
