"""Who may change things from the dashboard: anyone at this machine; over a network, only with the token.

The dashboard can start trainings that take every core, stop, resume or cancel runs, delete run folders and
download the data set. The shipped ``.streamlit/config.toml`` binds the server to loopback, as TensorBoard and
Jupyter do. A user who starts it with another ``server.address`` (or none: every interface) shares it; then those
actions need ``CIFARNET_TOKEN``, typed once per browser session, and without a token they are off. Pages only
offer a control when :func:`allowed`; every action also calls :func:`require` where it runs, because a widget's
value can reach the server whether or not the page drew the widget.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os

import streamlit as st

from cifarnet.errors import CifarnetError

TOKEN_ENV = "CIFARNET_TOKEN"
MIN_TOKEN_CHARS = 16  # every guess costs one message to the server: a short token could be tried out
UNLOCKED_KEY = "access_unlocked"  # the token's digest, once this browser session has typed it
INPUT_KEY = "access_token"  # the password box; emptied as soon as it is read
WRONG_KEY = "access_wrong"  # set by the box's callback, which can draw nothing itself
ACTIONS = "launching, stopping, resuming, cancelling and deleting runs"


class AccessError(CifarnetError):
    """An action that changes something, asked for by a session that may not change anything."""


def is_loopback(address: str | None) -> bool:
    """True when a server bound to ``address`` answers this machine only.

    No address means every interface; a host name other than ``localhost``, or a Unix socket, may be reached
    from elsewhere (a proxy in front of it), so only loopback addresses count.
    """
    if not address:
        return False
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def shared() -> bool:
    """True when this dashboard is reachable from beyond this machine (as the server was started)."""
    return not is_loopback(st.get_option("server.address"))


def _token() -> tuple[str | None, str | None]:
    """``CIFARNET_TOKEN`` and, when it cannot be used, why (unset, or too short to withstand guessing)."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None, f"{TOKEN_ENV} is not set"
    if len(token) < MIN_TOKEN_CHARS:
        return None, f"{TOKEN_ENV} is too short ({len(token)} characters; at least {MIN_TOKEN_CHARS})"
    return token, None


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _unlocked(token: str) -> bool:
    """True when this session has typed ``token``; compared in constant time, and a forged value never matches."""
    held = st.session_state.get(UNLOCKED_KEY)
    return isinstance(held, bytes) and hmac.compare_digest(held, _digest(token))


def refusal() -> str | None:
    """Why this session may not change anything now (one line), or None when it may."""
    if not shared():
        return None
    token, problem = _token()
    if token is None:
        return (
            f"This dashboard is reachable from the network and {problem}, so {ACTIONS} are off here. "
            f"Restart it with {TOKEN_ENV} set, or without --server.address to use it on this machine only."
        )
    if not _unlocked(token):
        return f"This dashboard is shared: {ACTIONS} need its access token, typed once in this browser session."
    return None


def allowed() -> bool:
    """True when the page may offer controls that change something."""
    return refusal() is None


def require() -> None:
    """Raise :class:`AccessError` unless this session may change something: the first line of every action."""
    problem = refusal()
    if problem:
        raise AccessError(problem)


def _check_typed() -> None:
    """Password-box callback: unlock this session on the right token, and empty the box either way, so the
    token is never sent back to the browser."""
    typed = str(st.session_state.get(INPUT_KEY) or "")
    st.session_state[INPUT_KEY] = ""
    token = _token()[0]
    if token is not None and hmac.compare_digest(_digest(typed), _digest(token)):
        st.session_state[UNLOCKED_KEY] = _digest(token)
        st.session_state.pop(WRONG_KEY, None)
    else:
        st.session_state[WRONG_KEY] = True


def notice() -> None:
    """Above every page of a shared dashboard: why nothing can be changed, and where a token is typed."""
    problem = refusal()
    if problem is None:
        return
    if _token()[0] is None:
        st.warning(problem, icon=":material/lock:")
        return
    text, box = st.columns([3, 1], vertical_alignment="bottom")
    text.info(problem, icon=":material/lock:")
    box.text_input(
        "Access token",
        type="password",
        key=INPUT_KEY,
        on_change=_check_typed,
        help=f"The value of {TOKEN_ENV} on the machine that runs the dashboard",
    )
    if st.session_state.pop(WRONG_KEY, False):
        st.error("Wrong access token: nothing was unlocked.", icon=":material/key_off:")
