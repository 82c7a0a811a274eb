"""Logging in with an API token, and out: the session lives in Postgres, the cookie names it."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, session, url_for

import web
from app import tokens
from web import settings, unit_of_work
from web.dashboard import base


@base.bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    target = base.safe_next(request.values.get("next"), url_for("dashboard.overview"))
    if request.method == "GET":
        return render_template("dashboard/login.html", next=target)
    token = request.form.get("token", "").strip()
    with unit_of_work() as db_session:
        identity = tokens.identify(db_session, token, settings().api_token) if token else None
        if identity is not None:
            if isinstance(session.get("nonce"), str):  # logging in again ends the old one
                tokens.end_session(db_session, session["nonce"])
            nonce = tokens.open_session(db_session, identity.name, base.SESSION_LIFETIME)
    if identity is None:
        web.auth_failed()
        flash("That token is not valid (or was revoked).", "error")
        return render_template("dashboard/login.html", next=target), 401
    g.user = identity.name  # the login's audit row names who logged in (web.audit)
    session.clear()  # a fresh session (and CSRF token) for the new identity
    session.permanent = True
    # The nonce names the server-side session; the MAC ties it to this very token.
    session.update(nonce=nonce, mac=tokens.session_mac(base.session_key(), tokens.digest(token)))
    return redirect(target, code=303)


@base.bp.route("/logout", methods=["GET", "POST"])
def logout() -> Any:
    """GET asks (a link must not change anything); the POST, with its CSRF token, logs out."""
    if request.method == "GET":
        return render_template("dashboard/logout.html")
    with unit_of_work() as db_session:
        tokens.end_session(db_session, session["nonce"])
    session.clear()
    flash("Logged out.", "info")
    return redirect(url_for("dashboard.login"), code=303)
