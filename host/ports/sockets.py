"""Socket plumbing: where the socket lives, binding it safely, systemd activation and notify.

No libsystemd: ``LISTEN_FDS``/``LISTEN_PID`` and ``NOTIFY_SOCKET`` are tiny protocols
(sd_listen_fds(3), sd_notify(3)) implemented here directly.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
from dataclasses import dataclass

log = logging.getLogger(__name__)

SERVICE = "copperd"
SYSTEM_DIR = "/run/copperline"
ENV_SOCKET = "COPPERD_SOCKET"
#: First file descriptor systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3


class SocketError(Exception):
    """The socket cannot be used; the message says which path and why."""


def is_abstract(path: str) -> bool:
    return path.startswith("@")


def to_address(path: str) -> str:
    """The address to bind/connect: ``@name`` -> the abstract ``\\0name``."""
    return "\0" + path[1:] if is_abstract(path) else path


def _dir_usable(d: str) -> bool:
    """True when ``d`` exists and is writable, or can be created in a writable parent."""
    if os.path.isdir(d):
        return os.access(d, os.W_OK | os.X_OK)
    parent = os.path.dirname(d.rstrip("/")) or "/"
    return os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)


def candidate_paths(env: dict | None = None) -> list[str]:
    """Default socket paths in order of preference (no override applied)."""
    env = os.environ if env is None else env
    out = [os.path.join(SYSTEM_DIR, f"{SERVICE}.sock")]
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        out.append(os.path.join(xdg, "copperline", f"{SERVICE}.sock"))
    out.append(os.path.join(env.get("TMPDIR", "/tmp"), f"copperline-{os.getuid()}", f"{SERVICE}.sock"))
    return out


def server_socket_path(cli: str | None = None, env: dict | None = None) -> str:
    """Where the daemon listens: ``--socket``, else ``$COPPERD_SOCKET``, else the first
    candidate whose directory is writable (/run/copperline, $XDG_RUNTIME_DIR/copperline,
    then a private per-user directory under $TMPDIR or /tmp)."""
    env = os.environ if env is None else env
    if cli:
        return cli
    if env.get(ENV_SOCKET):
        return env[ENV_SOCKET]
    for path in candidate_paths(env):
        if _dir_usable(os.path.dirname(path)):
            return path
    raise SocketError("no usable socket directory (/run/copperline, $XDG_RUNTIME_DIR, /tmp): "
                      "pass --socket PATH")


def client_socket_path(env: dict | None = None) -> str:
    """Where a client looks: ``$COPPERD_SOCKET``, else the first candidate that exists."""
    env = os.environ if env is None else env
    if env.get(ENV_SOCKET):
        return env[ENV_SOCKET]
    cands = candidate_paths(env)
    for path in cands:
        if os.path.exists(path):
            return path
    return cands[0]


def _probe_live(address: str) -> bool:
    """True when something accepts connections on ``address``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(1.0)
    try:
        s.connect(address)
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        # EAGAIN: a full backlog means a live (busy) listener.
        return exc.errno in (errno.EAGAIN, errno.ETIMEDOUT)
    finally:
        s.close()


@dataclass
class Listener:
    """A bound, listening socket and what to clean up when done."""
    sock: socket.socket
    path: str                 # as given ("@name" for abstract)
    owned_file: bool = False  # we created the socket file: remove it on exit
    activated: bool = False   # passed in by systemd
    lock_fd: int | None = None
    inode: tuple[int, int] | None = None

    def close(self) -> None:
        """Close the socket; remove the socket file if it is still the one we made."""
        try:
            self.sock.close()
        finally:
            if self.owned_file:
                try:
                    st = os.lstat(self.path)
                    if (st.st_dev, st.st_ino) == self.inode:
                        os.unlink(self.path)
                except FileNotFoundError:
                    pass
            if self.lock_fd is not None:
                # Unlink while still holding the lock, so no one locks the old inode after us.
                try:
                    os.unlink(self.path + ".lock")
                except OSError:
                    pass
                os.close(self.lock_fd)
                self.lock_fd = None


def bind_listener(path: str, *, mode: int = 0o660, group: str | None = None,
                  backlog: int = 128) -> Listener:
    """Bind and listen on ``path`` (``@name`` = abstract).

    An existing socket file nobody listens on (a crashed daemon's) is replaced; a live
    daemon's socket is never taken: :class:`SocketError`. A non-socket file at ``path`` is
    never removed.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    if is_abstract(path):
        try:
            sock.bind(to_address(path))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise SocketError(f"{path}: abstract socket already in use (another copperd is "
                                  "running?)") from None
            raise SocketError(f"{path}: cannot bind: {exc.strerror}") from None
        sock.listen(backlog)
        return Listener(sock, path)

    d = os.path.dirname(os.path.abspath(path))
    # The per-user fallback under /tmp must be ours and private (no one else can plant a
    # socket or a symlink there).
    private_dir = os.path.basename(d) == f"copperline-{os.getuid()}"
    try:
        os.makedirs(d, mode=0o700 if private_dir else 0o755, exist_ok=True)
        if private_dir:
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
                sock.close()
                raise SocketError(f"{d}: not a private directory owned by uid {os.getuid()}; "
                                  "refusing to use it")
    except OSError as exc:
        sock.close()
        raise SocketError(f"{path}: cannot create directory {d}: {exc.strerror}") from None
    # The lock closes the window between "the old socket is dead" and "we bound ours"
    # when two daemons start at once.
    lock_path = path + ".lock"
    try:
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        sock.close()
        raise SocketError(f"{lock_path}: cannot open lock file: {exc.strerror}") from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        sock.close()
        raise SocketError(f"{path}: another copperd holds {lock_path}; not taking its socket") from None
    try:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise SocketError(f"{path}: exists and is not a socket; refusing to replace it")
            if _probe_live(path):
                raise SocketError(f"{path}: a live daemon is listening there; not taking its "
                                  "socket (stop it first, or use --socket)")
            log.warning("replacing stale socket %s (no daemon listening)", path)
            os.unlink(path)
        old = os.umask(0o777 & ~mode)   # the socket is born with the right mode: no window
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, mode)
        if group is not None:
            import grp
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise SocketError(f"--group {group}: no such group") from None
            os.chown(path, -1, gid)
        sock.listen(backlog)
        st = os.lstat(path)
        return Listener(sock, path, owned_file=True, lock_fd=lock_fd, inode=(st.st_dev, st.st_ino))
    except SocketError:
        os.close(lock_fd)
        sock.close()
        raise
    except OSError as exc:
        os.close(lock_fd)
        sock.close()
        raise SocketError(f"{path}: cannot bind: {exc.strerror}") from None


# -- systemd ----------------------------------------------------------------------------

def listen_fds(env: dict | None = None, *, unset: bool = True) -> list[socket.socket]:
    """Sockets passed by systemd socket activation (``LISTEN_FDS``), as socket objects.

    Only when ``LISTEN_PID`` is this process. The variables are removed from the
    environment (``unset``) so that child processes do not inherit them.
    """
    env = os.environ if env is None else env
    try:
        pid = int(env.get("LISTEN_PID", ""))
        count = int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if unset:
        for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(k, None)
    if pid != os.getpid() or count <= 0:
        return []
    out = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        s = socket.socket(fileno=fd)
        if s.family != socket.AF_UNIX or s.type != socket.SOCK_STREAM:
            s.detach()
            raise SocketError(f"systemd passed fd {fd} that is not a Unix stream socket "
                              "(check ListenStream= in copperd.socket)")
        if not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            s.detach()
            raise SocketError(f"systemd passed fd {fd} that is not listening")
        out.append(s)
    return out


def activated_listener(sock: socket.socket) -> Listener:
    name = sock.getsockname()
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    path = "@" + name[1:] if name.startswith("\0") else name
    return Listener(sock, path or "<systemd socket>", activated=True)


def sd_notify(state: str, env: dict | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``; False when not under
    systemd. ``@name`` addresses are abstract sockets."""
    env = os.environ if env is None else env
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(addr)
        s.sendall(state.encode("utf-8"))
        return True
    except OSError as exc:
        log.warning("sd_notify %r to %s failed: %s", state, env.get("NOTIFY_SOCKET"), exc)
        return False
    finally:
        s.close()
