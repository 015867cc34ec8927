"""Who may use the dashboard, and the checks on every request it answers.

- On the unix socket (root's alone, 0600 in a 0700 dir) whoever connects is root or was
  let in by root (`ssh -L`): no login.
- On TCP every agent can connect too (the containers share the host's network
  namespace): a session needs the token, which lives in a root-only file no container
  binds. A session is a random id in an HttpOnly, SameSite=Strict cookie.
- Everywhere: every POST carries a CSRF token (an HMAC of the session under a key made
  at start), an Origin other than the page's own is refused, and the Host header must be
  a name the operator uses (localhost, the listen address, --allow-host), so that a page
  of another site that re-points its DNS at the tunnel cannot read or drive it.
- Every answer forbids framing and inline script (CSP), so that nothing the manager
  writes into a proposal can run or dress itself up as the dashboard's own controls.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from hivegen import fsutil
from hivegen.errors import UsageError

SESSION_COOKIE = "hivegen_session"
SESSION_SECONDS = 12 * 3600
LOCAL_SESSION = "unix-socket"
# Failed logins allowed per minute on one listener: a token is not guessed at this rate.
MAX_FAILED_LOGINS = 10
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def load_or_make_token(path: Path) -> str:
    """The dashboard token: read from `path`, made (0600) if it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        fsutil.ensure_dir(path.parent, 0o755)
        fsutil.write_atomic(path, token + "\n", mode=0o600)
        return token
    except OSError as exc:
        raise UsageError(f"cannot read the dashboard token {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "r") as stream:
        st = os.fstat(stream.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise UsageError(
                f"the dashboard token {path} must be a file only its owner can read "
                f"(mode {stat.S_IMODE(st.st_mode):04o}, uid {st.st_uid})",
                hint=f"chmod 600 {path}, or remove it and a new token is made",
            )
        token = stream.read(4096).strip()
    if len(token) < 16:
        raise UsageError(
            f"the dashboard token in {path} is too short (at least 16 characters)",
            hint="remove the file and a new token is made",
        )
    return token


@dataclass(slots=True)
class Guard:
    """One listener's rules: `token` None means no login (the root-only unix socket)."""

    token: str | None
    extra_hosts: tuple[str, ...] = ()
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sessions: dict[str, float] = field(default_factory=dict)
    failures: list[float] = field(default_factory=list)

    @property
    def needs_login(self) -> bool:
        return self.token is not None

    def host_allowed(self, host_header: str) -> bool:
        host = host_header.strip().lower()
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        return host in (*LOCAL_HOSTS, *(h.lower() for h in self.extra_hosts))

    def session_of(self, cookie: str | None) -> str | None:
        """The session a request belongs to, or None (not logged in)."""
        if not self.needs_login:
            return LOCAL_SESSION
        if not cookie:
            return None
        expiry = self.sessions.get(cookie)
        if expiry is None or expiry < time.time():
            self.sessions.pop(cookie, None)
            return None
        return cookie

    def too_many_failures(self) -> bool:
        now = time.time()
        self.failures = [t for t in self.failures if now - t < 60]
        return len(self.failures) >= MAX_FAILED_LOGINS

    def login(self, offered: str) -> str | None:
        """A new session id for the right token, else None (and the failure counted)."""
        assert self.token is not None
        if hmac.compare_digest(offered.strip().encode(), self.token.encode()):
            session = secrets.token_urlsafe(32)
            self.sessions[session] = time.time() + SESSION_SECONDS
            return session
        self.failures.append(time.time())
        return None

    def logout(self, session: str) -> None:
        with contextlib.suppress(KeyError):
            del self.sessions[session]

    def csrf(self, session: str) -> str:
        return hmac.new(self.key, session.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: str, offered: str) -> bool:
        return hmac.compare_digest(self.csrf(session), offered)
