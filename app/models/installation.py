"""+ The installation: facts about this database that outlive every replica (k8s area)."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class Installation(SQLModel, table=True):
    """Key/value facts written once. `id` is a random id made when the schema is created: the
    Kubernetes runner labels and names its Jobs with it, so after a database reset or a restore
    into a new database, Jobs of the old one are never taken for this one's."""

    __tablename__ = "installation"

    key: str = Field(primary_key=True, max_length=32)
    value: str = Field(max_length=64)
