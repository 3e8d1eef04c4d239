"""REST: users, their cards, PINs and passwords, and delegation (administrators)."""

# No "from __future__ import annotations": FastAPI must see the real annotations.

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from spoolvault.admin import actions
from spoolvault.api.auth import UserDependency
from spoolvault.api.models import DelegatesIn, DelegatesOut
from spoolvault.identity import IdentityService, UserInfo
from spoolvault.jobs.service import JobService
from spoolvault.util.threads import in_thread


class UserIn(BaseModel):
    username: str
    password: str | None = Field(None, repr=False)
    card_number: str | None = Field(None, repr=False, description="Stored as a keyed hash.")
    pin: str | None = Field(None, repr=False, description="4 to 16 digits; stored hashed.")
    id_number: str | None = Field(None, description="For ID number + PIN login.")
    full_name: str | None = None
    email: str | None = None
    groups: list[str] | None = None
    is_admin: bool | None = None


class UserPatch(BaseModel):
    """Fields to change; null clears one (password, card, PIN, ID number, name, e-mail)."""

    password: str | None = Field(None, repr=False)
    card_number: str | None = Field(None, repr=False)
    pin: str | None = Field(None, repr=False)
    id_number: str | None = None
    full_name: str | None = None
    email: str | None = None
    groups: list[str] | None = None
    is_admin: bool | None = None
    disabled: bool | None = None


class UserOut(BaseModel):
    username: str
    is_admin: bool
    full_name: str | None = None
    email: str | None = None
    id_number: str | None = None
    source: str = "local"
    disabled: bool = False
    has_password: bool = False
    has_card: bool = False
    has_pin: bool = False
    groups: list[str] = Field(default_factory=list)
    delegates: list[str] = Field(default_factory=list)
    delegate_groups: list[str] = Field(default_factory=list)


def _user_out(info: UserInfo) -> UserOut:
    return UserOut(**vars(info))


def create_users_router(
    jobs: JobService, identity: IdentityService, *, admin: UserDependency
) -> APIRouter:
    """``/users``: add, change and list users; set whose jobs a user's delegates release."""
    router = APIRouter()

    @router.post("/users", status_code=201, response_model=UserOut)
    async def create_user(body: UserIn, user: Annotated[str, Depends(admin)]) -> UserOut:
        """Create a user; card numbers, PINs and passwords are stored hashed only."""
        fields = body.model_dump(exclude_unset=True, exclude_none=True, exclude={"username"})
        info = await in_thread(actions.add_user, jobs, identity.users, user, body.username, fields)
        return _user_out(info)

    @router.get("/users", response_model=list[UserOut])
    async def get_users(_: Annotated[str, Depends(admin)]) -> list[UserOut]:
        return [_user_out(u) for u in await in_thread(identity.users.list)]

    @router.get("/users/{username}", response_model=UserOut)
    async def get_user(username: str, _: Annotated[str, Depends(admin)]) -> UserOut:
        return _user_out(await in_thread(identity.users.info, username))

    @router.patch("/users/{username}", response_model=UserOut)
    async def patch_user(
        username: str, body: UserPatch, user: Annotated[str, Depends(admin)]
    ) -> UserOut:
        """Set or clear a user's card, PIN, password, ID number, name, e-mail, groups."""
        fields = body.model_dump(exclude_unset=True)
        info = await in_thread(actions.change_user, jobs, identity.users, user, username, fields)
        return _user_out(info)

    @router.put("/users/{username}/delegates", response_model=DelegatesOut)
    async def put_delegates(
        username: str, body: DelegatesIn, user: Annotated[str, Depends(admin)]
    ) -> DelegatesOut:
        """Exactly these users and groups' members may release ``username``'s jobs."""
        info = await in_thread(
            actions.set_delegates, jobs, identity.users, user, username, body.users, body.groups
        )
        return DelegatesOut(users=info.delegates, groups=info.delegate_groups)

    return router
