"""An independent model of xwvm's authorization rules, for the property-based suite.

Written from the documentation (docs/security.md, docs/api.md, docs/admin-guide.md,
docs/user-guide.md "Access rights", the product brief and issue 12's rules), never from
``xwvm/server/policy.py``: the point is a second opinion. Each rule cites the passage it
encodes; where the docs left a choice open the comment says which reading was taken.

The model knows nothing of HTTP or the database: principals and objects are plain values,
decisions are booleans.
"""

from __future__ import annotations

from dataclasses import dataclass

# Levels, ordered as in XtremWeb-HEP (admin guide, "Users, groups and rights").
STANDARD, WORKER, VWORKER, GROUP_ADMIN, SUPER = (
    "standard", "worker", "vworker", "group_admin", "super")
LEVELS = (STANDARD, WORKER, VWORKER, GROUP_ADMIN, SUPER)

# "worker accounts can only run jobs" (admin guide); a vworker is a worker inside a VM and a
# delegated credential acts "as a vworker" with "nothing of policy.require's operations"
# (security.md). So the user operations (read, write, chmod, submit, list) are for these:
USER_LEVELS = frozenset({STANDARD, GROUP_ADMIN, SUPER})

STICKY = 0o1000
READ, WRITE, EXEC = 4, 2, 1


@dataclass(frozen=True)
class Principal:
    uid: str
    level: str
    group: str | None  # a group uid; None: in no group


@dataclass(frozen=True)
class Obj:
    """Any access-controlled object: app, data, job, user, group, host."""

    uid: str
    owner: str
    group: str | None
    mode: int  # 0o7777 bits: sticky + owner/group/other rwx


def same_group(a: str | None, b: str | None) -> bool:
    """Issue 12, hole 2: an absent group never matches anything (None == None grants
    nothing)."""
    return a is not None and a == b


def bits(p: Principal, o: Obj) -> int:
    """The rwx bits that apply to ``p``: Unix-like (user guide: "owner/group/other ×
    read/write/execute"), so the first class that matches decides: the owner gets the
    owner bits even when the group or other bits say more. (The docs do not say whether
    classes combine; Unix's reading is taken.) A group admin "manages its group's users
    and objects" (admin guide) and may chmod them anyway (security.md): within its group
    it has every bit, like a super user there; outside it, it is a user like any other.
    (The docs do not say how that combines with ownership: the reading taken is the
    server's, where the owner class comes first, so a group admin's own object is bound
    by its owner bits.)"""
    if p.uid == o.owner:
        return (o.mode >> 6) & 7
    if p.level == GROUP_ADMIN and same_group(p.group, o.group):
        return 7
    if same_group(p.group, o.group):
        return (o.mode >> 3) & 7
    return o.mode & 7


def is_user(p: Principal) -> bool:
    return p.level in USER_LEVELS


def can_read(p: Principal, o: Obj) -> bool:
    """GET of one object, and whether it appears in a listing ("reader", api.md). Super
    users "do everything" (admin guide)."""
    return is_user(p) and (p.level == SUPER or bool(bits(p, o) & READ))


def can_read_user(p: Principal, o: Obj) -> bool:
    """A user object: as any object, and every account reads its own (``whoami`` shows it;
    the docs do not say so for ``GET /users``, which lists "users you may read")."""
    return (is_user(p) and p.uid == o.uid) or can_read(p, o)


def can_write(p: Principal, o: Obj) -> bool:
    """Owner actions on a job (abort, hold, release), a template's lifecycle ("writer")."""
    return is_user(p) and (p.level == SUPER or bool(bits(p, o) & WRITE))


def can_delete(p: Principal, o: Obj) -> bool:
    """DELETE: "writer (owner if sticky)" (api.md); "sticky objects are deleted by their
    owner only" (security.md). Reading taken: a super user, who "does everything", may
    still delete a sticky object; the docs do not name that case."""
    if not can_write(p, o):
        return False
    return not (o.mode & STICKY) or p.uid == o.owner or p.level == SUPER


def can_delete_job(p: Principal, job: Obj, result: Obj | None) -> bool:
    """DELETE /works/UID "removes the job and its results" (api.md): the results are a
    data object with rights of their own, so deleting them needs the right to delete
    them too. (Reading taken: the docs name only the job's "writer".)"""
    return can_delete(p, job) and (result is None or can_delete(p, result))


def result_follows_chmod(p: Principal, job: Obj, result: Obj) -> bool:
    """Issue 12 hole 10: "chmod on a job carries to" its results. Reading taken (the
    server's, the docs to say it): results whose rights were set apart from the job's keep
    them, and the chmod carries only as far as the caller may chmod the results."""
    return result.owner == job.owner and result.mode == job.mode and can_chmod(p, result)


def can_chmod(p: Principal, o: Obj) -> bool:
    """"only by the owner, a group admin of its group or a super user" (security.md);
    worker accounts get "no chmod" (security.md)."""
    if not is_user(p):
        return False
    if p.level == SUPER or p.uid == o.owner:
        return True
    return p.level == GROUP_ADMIN and same_group(p.group, o.group)


def can_submit(p: Principal, app: Obj) -> bool:
    """POST /works: "standard+ with x on the app" (api.md)."""
    return is_user(p) and (p.level == SUPER or bool(bits(p, app) & EXEC))


def can_read_result(p: Principal, job: Obj, result: Obj) -> bool:
    """GET /works/UID/result: a reader of the job (api.md) and, issue 12 hole 3, "results
    are readable only with read access to the result data object itself"."""
    return can_read(p, job) and can_read(p, result)


# --- user management ------------------------------------------------------------------

# What a group admin may create in its group: "group admins ... manage their group's users"
# (admin guide); the docs never let a group admin make a peer or a super user, so only the
# levels below its own. (Reading taken where the docs are silent.)
GROUP_ADMIN_MAY_CREATE = frozenset({STANDARD, WORKER, VWORKER})


def can_create_user(p: Principal, level: str, group: str | None, public: bool = False) -> bool:
    """POST /users: "group admin+" (api.md). A group admin creates users only in its own
    group (an admin without a group creates nobody: absent groups match nothing); only a
    super user makes a public worker (security.md, "a public worker (super users only)")."""
    if public and level not in (WORKER, VWORKER):  # only an account that runs jobs
        return False
    if p.level == SUPER:
        return True
    if p.level != GROUP_ADMIN or public:
        return False
    return same_group(p.group, group) and level in GROUP_ADMIN_MAY_CREATE


def can_disable(p: Principal, target: Principal) -> bool:
    """POST /users/UID/disable|enable: "by those who may create such a user, never
    oneself" (security.md)."""
    return p.uid != target.uid and can_create_user(p, target.level, target.group)


# --- worker confinement ---------------------------------------------------------------

@dataclass(frozen=True)
class Confinement:
    """Which jobs a worker account may be given: ``kind`` is "user" (``to`` = a user uid),
    "group" (``to`` = a group uid) or "public"."""

    kind: str
    to: str | None = None


def confinement_of_created(creator: Principal, group: str | None, public: bool) -> Confinement:
    """A worker account made with POST /users. Issue 12 hole 1: "Every worker account is
    confined (to its enroller or its group) unless a super user makes it public"; the admin
    guide's ``xwvm user add w1 --rights worker --group cms`` is "confined to cms"."""
    if public and creator.level == SUPER:
        return Confinement("public")
    if group is not None:
        return Confinement("group", group)
    return Confinement("user", creator.uid)


def may_run(c: Confinement, job: Obj) -> bool:
    """security.md "Confinement": a worker enrolled by a user runs only that user's jobs;
    one for a project only that group's jobs the group may read; a public worker only jobs
    readable by others."""
    if c.kind == "user":
        return job.owner == c.to
    if c.kind == "group":
        return same_group(c.to, job.group) and bool((job.mode >> 3) & READ)
    return bool(job.mode & READ)


# --- name resolution ------------------------------------------------------------------

def resolve(ref: str, objects: dict[str, Obj], names: dict[str, str]) -> str | None:
    """Which object a reference means (issue 12 hole 7): "An id always means that object";
    a name never shadows a uid. ``names`` maps uid -> name. Returns the uid or None."""
    if ref in objects:
        return ref
    found = [uid for uid, name in names.items() if name == ref]
    return found[0] if len(found) == 1 else None
