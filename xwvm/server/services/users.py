"""Users, usergroups, logins and worker enrollment."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from xwvm.server import events, policy, states
from xwvm.server.auth import crls, passwords, tokens
from xwvm.server.config import ServerConfig
from xwvm.server.db.models import ClientCert, Host, Identity, Token, User, UserGroup, Work, utcnow
from xwvm.server.policy import Principal
from xwvm.server.rights import GROUP, PRIVATE, Level
from xwvm.server.services import hosts as host_service
from xwvm.server.services.common import check_uid, id_in_ref

LOGIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}\Z")
MIN_PASSWORD = 8


def _check_login(login: str) -> None:
    if not LOGIN_RE.match(login):
        raise BadRequest("a login must be 1-128 letters, digits, '_', '.', '@' or '-'",
                         code="bad_login")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"password must have at least {MIN_PASSWORD} characters",
                         code="weak_password")


def group_by_name(db: Session, name: str) -> UserGroup:
    grp = db.scalars(select(UserGroup).where(UserGroup.name == name)).first()
    if grp is None:
        raise NotFound("no usergroup of that name", code="unknown_group")
    return grp


def create_group(db: Session, p: Principal, name: str) -> UserGroup:
    policy.require(p, "insert_group")
    _check_login(name)
    if db.scalars(select(UserGroup).where(UserGroup.name == name)).first():
        raise Conflict("a usergroup of that name already exists", code="exists")
    grp = UserGroup(name=name, owner_uid=p.uid, access_rights=GROUP)
    db.add(grp)
    db.flush()
    grp.group_uid = grp.uid
    events.record(db, "group_created", object_uid=grp.uid, actor_uid=p.uid, detail=name)
    return grp


def create_user(db: Session, p: Principal | None, login: str, password: str | None,
                level: Level, group_name: str | None = None, public: bool = False) -> User:
    """Create an account; ``p`` None is the bootstrap (server init) path. A worker account
    is confined to its group, or else to its creator; ``public`` (super users) runs public
    jobs."""
    _check_login(login)
    if password is not None:
        _check_password(password)
    is_worker = level in (Level.WORKER, Level.VWORKER)
    if public and not is_worker:
        raise BadRequest("only a worker account may be public", code="bad_public")
    group = group_by_name(db, group_name) if group_name else None
    group_uid = group.uid if group else None
    confine: tuple[str | None, str | None] = (None, None)
    if p is not None:
        policy.require(p, "insert_user")
        if not policy.manage_user_allowed(p, group_uid, level):
            raise Forbidden(f"you may not create a {level.label} user in this group",
                            code="forbidden_level")
        if is_worker:
            confine = policy.worker_confinement(p, group_uid, public)
    elif is_worker:  # nobody to confine it to; init and outside logins make no workers
        raise ValueError("the bootstrap path creates no worker accounts")
    if db.scalars(select(User).where(User.login == login)).first():
        raise Conflict("a user with that login already exists", code="exists")
    user = User(login=login, rights=int(level), group_uid=group_uid,
                password_hash=passwords.hash_password(password) if password else None,
                access_rights=PRIVATE, owner_uid="", confine_user_uid=confine[0],
                confine_group_uid=confine[1])
    db.add(user)
    db.flush()
    user.owner_uid = p.uid if p else user.uid
    events.record(db, "user_created", object_uid=user.uid, actor_uid=p.uid if p else None,
                  detail=f"{login} ({level.label})")
    return user


def enroll_worker(db: Session, p: Principal, project: str | None,
                  public: bool = False) -> tuple[User, str]:
    """A new worker account. By default it runs only the enrolling user's jobs; with a
    project, only that usergroup's jobs; ``public`` (super users only) runs public jobs."""
    policy.require(p, "enroll_worker")
    confine_user = confine_group = None
    group_uid = p.group_uid
    if project:
        grp = group_by_name(db, project)
        policy.check_group_admin(p, grp.uid, project)
        confine_group = group_uid = grp.uid
    else:
        # Without a project, enrolled for the user alone, whatever the user's group.
        confine_user, _ = policy.worker_confinement(p, None, public)
    password = secrets.token_urlsafe(24)
    login = f"worker-{secrets.token_hex(6)}"
    user = User(login=login, rights=int(Level.WORKER), group_uid=group_uid,
                password_hash=passwords.hash_password(password), access_rights=PRIVATE,
                owner_uid=p.uid, confine_user_uid=confine_user,
                confine_group_uid=confine_group)
    db.add(user)
    db.flush()
    scope = project or ("public" if public else f"user {p.login}")
    events.record(db, "worker_enrolled", object_uid=user.uid, actor_uid=p.uid,
                  detail=f"{login} for {scope}")
    return user, password


def login(db: Session, secret: bytes, login_name: str, password: str,
          lifetime_s: int, worker_lifetime_s: int) -> tuple[str, User, object]:
    user = db.scalars(select(User).where(User.login == login_name)).first()
    if user is None or not passwords.verify_password(password, user.password_hash):
        raise Unauthorized("wrong login or password", code="bad_credentials")
    # the right password of a disabled account: say so (session_for refuses it), rather
    # than "wrong password", which sends its owner guessing (issue 23)
    return session_for(db, secret, user, lifetime_s, worker_lifetime_s)


def session_for(db: Session, secret: bytes, user: User, lifetime_s: int,
                worker_lifetime_s: int, how: str = "password",
                max_lifetime_s: int | None = None) -> tuple[str, User, object]:
    """A session token for an authenticated user (password, certificate or OIDC), living
    at most ``max_lifetime_s`` (what is left of the certificate that proved who it is)."""
    if not user.enabled:
        raise Unauthorized(f"account {user.login} is disabled", code="account_disabled")
    lifetime = worker_lifetime_s if user.rights in (Level.WORKER, Level.VWORKER) else lifetime_s
    if max_lifetime_s is not None:
        lifetime = max(1, min(lifetime, max_lifetime_s))
    token, expires = tokens.issue(db, secret, user.uid, lifetime)
    events.record(db, "login", object_uid=user.uid, actor_uid=user.uid, detail=how)
    return token, user, expires


def change_password(db: Session, p: Principal, old: str, new: str) -> User:
    """Change one's own password; every token of the account is revoked (the caller issues
    a fresh one)."""
    if p.is_delegated:
        raise Forbidden("a delegated VM credential may not change a password",
                        code="forbidden_delegated")
    user = db.get(User, p.uid)
    if user is None or not passwords.verify_password(old, user.password_hash):
        raise Unauthorized("the current password is wrong", code="bad_credentials")
    _check_password(new)
    user.password_hash = passwords.hash_password(new)
    tokens.revoke_all(db, user.uid)
    events.record(db, "password_changed", object_uid=user.uid, actor_uid=p.uid)
    return user


def set_enabled(db: Session, p: Principal, uid: str, enabled: bool) -> User:
    """Disable (revoking every token) or enable an account; the same people who may create
    such a user may do it, and nobody disables themselves."""
    policy.require(p, "insert_user")
    user = db.get(User, check_uid(uid, "user"))
    if user is None or user.removed_at is not None:
        raise NotFound(f"no user {uid}", code="not_found")
    if not policy.manage_user_allowed(p, user.group_uid, Level(user.rights)):
        raise Forbidden(f"you may not manage the {Level(user.rights).label} user {user.login}",
                        code="forbidden_level")
    if user.uid == p.uid:
        raise Conflict("you may not disable or enable your own account", code="own_account")
    user.enabled = enabled
    if not enabled:
        tokens.revoke_all(db, user.uid)
    events.record(db, "user_enabled" if enabled else "user_disabled", object_uid=user.uid,
                  actor_uid=p.uid, detail=user.login)
    return user


def principal_for(db: Session, secret: bytes, token: str,
                  cfg: ServerConfig | None = None) -> Principal:
    """The principal of a bearer token: signed, and its row neither revoked nor expired (the
    row's expiry rules: a payload re-signed with a stolen secret cannot extend it), nor
    opened with a certificate that an outside CA's CRL (in ``cfg``) now lists."""
    claims = tokens.decode(secret, token)
    row = db.execute(select(Token, User).join(User, User.uid == Token.user_uid)
                     .where(Token.jti == claims.jti)).first()
    if row is not None and not row[1].enabled:  # its tokens were revoked with it: say why
        raise _account_refusal(row[1])
    if row is None or row[0].revoked or _cert_revoked(db, cfg, row[0]):
        raise Unauthorized("token revoked: log in again", code="token_revoked")
    if utcnow() >= row[0].expires_at:
        raise Unauthorized("token expired: log in again", code="token_expired")
    scope, user = row[0].scope_work_uid, row[1]
    if scope is not None:  # a nested worker's credential: the owner's, narrowed to one job
        return Principal(uid=user.uid, login=user.login, level=Level.VWORKER,
                         group_uid=user.group_uid, token_jti=claims.jti, scope_work_uid=scope)
    return Principal(uid=user.uid, login=user.login, level=Level(user.rights),
                     group_uid=user.group_uid, confine_user_uid=user.confine_user_uid,
                     confine_group_uid=user.confine_group_uid, token_jti=claims.jti)


def _account_refusal(user: User) -> Unauthorized:
    if user.removed_at is not None:
        login = user.login.split("#removed-")[0]
        return Unauthorized(f"account {login} was removed", code="account_removed")
    return Unauthorized(f"account {user.login} is disabled", code="account_disabled")


def _cert_revoked(db: Session, cfg: ServerConfig | None, tok: Token) -> bool:
    if cfg is None or tok.auth_issuer is None or tok.auth_serial is None:
        return False
    if crls.revocation(cfg, tok.auth_issuer, int(tok.auth_serial, 16)) is None:
        return False
    tokens.revoke_at_once(db, tok.jti)  # ended for good, whatever the CRL says later
    return True


def logout(db: Session, p: Principal) -> None:
    if p.token_jti:
        tokens.revoke(db, p.token_jti)
    events.record(db, "logout", object_uid=p.uid, actor_uid=p.uid)


def list_users(db: Session, p: Principal) -> list[User]:
    policy.require(p, "list")
    users = db.scalars(select(User).where(User.removed_at.is_(None))
                       .order_by(User.login)).all()
    return [u for u in users if u.uid == p.uid or policy.allows(p, u, "r")]


def list_groups(db: Session, p: Principal) -> list[UserGroup]:
    policy.require(p, "list")
    return list(db.scalars(select(UserGroup).order_by(UserGroup.name)))


# --- removal (issue 23) ---------------------------------------------------------------
# As Slurm's sacctmgr refuses to delete a user with active jobs, a user with unfinished
# jobs is not removed; and as userdel keeps a departed user's files, the objects and
# final jobs a removed user owns stay (their history), ownerless but for super users.

def _user(db: Session, ref: str) -> User:
    uid = id_in_ref(ref, "user")
    q = select(User).where(User.removed_at.is_(None))
    user = db.scalars(q.where(User.uid == uid) if uid else q.where(User.login == ref)).first()
    if user is None:
        raise NotFound(f"no user {ref}", code="unknown_user")
    return user


def remove_user(db: Session, p: Principal, ref: str) -> User:
    """Remove an account (by login or id): refused while it owns unfinished jobs. Its
    tokens, certificates and outside identities end; its login is free again; the worker
    accounts it runs (its own, or enrolled for it alone) go with it, their hosts removed."""
    policy.require(p, "remove_user")
    user = _user(db, ref)
    if not policy.manage_user_allowed(p, user.group_uid, Level(user.rights)):
        raise Forbidden(f"you may not remove the {Level(user.rights).label} user {user.login}",
                        code="forbidden_level")
    if user.uid == p.uid:
        raise Conflict("you may not remove your own account", code="own_account")
    unfinished = db.scalars(select(Work.uid).where(
        Work.owner_uid == user.uid, Work.status.not_in(states.TERMINAL))).all()
    if unfinished:
        raise Conflict(f"user {user.login} owns {len(unfinished)} unfinished jobs: abort or "
                       "remove them first", code="in_use",
                       details={"jobs": sorted(unfinished)[:20]})
    workers = db.scalars(select(User).where(User.removed_at.is_(None),
                                            User.confine_user_uid == user.uid)).all()
    for account in [user, *workers]:
        _retire(db, p, account)
    return user


def _retire(db: Session, p: Principal, user: User) -> None:
    login = user.login
    for host in db.scalars(select(Host).where(Host.worker_user_uid == user.uid,
                                              Host.status != "gone")):
        host_service.retire(db, host, p.uid, f"its worker account {login} was removed")
    tokens.revoke_all(db, user.uid)
    for cert in db.scalars(select(ClientCert).where(ClientCert.user_uid == user.uid,
                                                    ClientCert.revoked_at.is_(None))):
        cert.revoked_at = utcnow()
    for identity in db.scalars(select(Identity).where(Identity.user_uid == user.uid)):
        db.delete(identity)
    user.enabled = False
    user.removed_at = utcnow()
    # The login is free for a new account (a new uid: nothing of this one becomes its).
    user.login = f"{login[:100]}#removed-{user.uid[:8]}"
    events.record(db, "user_removed", object_uid=user.uid, actor_uid=p.uid, detail=login)


def remove_group(db: Session, p: Principal, name: str) -> UserGroup:
    """Remove a usergroup (super users): refused while an account belongs to it or a
    worker account serves it. Objects of the group keep its id, which nobody has now."""
    policy.require(p, "remove_group")
    grp = group_by_name(db, name)
    members = db.scalars(select(User.login).where(
        User.removed_at.is_(None),
        (User.group_uid == grp.uid) | (User.confine_group_uid == grp.uid))
        .order_by(User.login)).all()
    if members:
        raise Conflict(f"usergroup {name} still has {len(members)} accounts ("
                       + ", ".join(members[:10]) + "): remove them first", code="in_use")
    db.delete(grp)
    events.record(db, "group_removed", object_uid=grp.uid, actor_uid=p.uid, detail=name)
    return grp
