"""Workbench settings: one pydantic-settings model, read from ``WORKBENCH_*`` variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Where the workbench keeps its data and how it talks to the database."""

    model_config = SettingsConfigDict(env_prefix="WORKBENCH_", extra="ignore")

    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        description="Folder for the default database, the demo dataset and caches (git-ignored).",
    )
    db_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; default: a SQLite file in data_dir.",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=10_000, description="How long SQLite waits for another writer before failing."
    )
    max_image_pixels: int = Field(
        default=89_478_485,
        description="Images with more pixels are refused as decompression bombs (Pillow's default).",
    )
    import_batch_rows: int = Field(
        default=5_000,
        description="Rows parsed, checked and committed together during an import (a transaction of "
        "about a tenth of a second on iMaterialist rows).",
    )
    image_check: str = Field(
        default="full",
        description="How imports check image files: full (decode + SHA-256), header (size only), none.",
    )
    demo_images: int = Field(
        default=64,
        ge=0,
        description="Images in the demo dataset Home imports on first start into an empty store; "
        "0 turns that off.",
    )
    models_dir: Path | None = Field(
        default=None,
        description="Folder the model registry looks in (and `models tiny` writes to); default: data_dir/models.",
    )

    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders besides data_dir where paths typed into pages (export folder, training "
        "output, base model) may point; WORKBENCH_ALLOWED_ROOTS lists them separated by "
        f"{os.pathsep!r}. The CLI writes where its command line says.",
    )

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    sign_in: Literal["off", "local", "oidc"] = Field(
        default="off",
        description="Who may use the app: off (one local user on 127.0.0.1, an admin), local (users of "
        "the store, `users add`), oidc (Streamlit's st.login; needs [auth] in .streamlit/secrets.toml).",
    )
    user: str | None = Field(
        default=None,
        description="Who the CLI acts as (recorded on decisions and in the audit log); default: the OS "
        "login name. Checked against the users of the store when sign-in is on.",
    )
    session_hours: float = Field(
        default=12.0, gt=0, description="How long a sign-in on the app lasts before it asks again.",
    )

    @property
    def database_url(self) -> str:
        """The effective database URL (``db_url`` or the default SQLite file)."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'workbench.db').as_posix()}"

    @model_validator(mode="after")
    def _default_models_dir(self) -> Settings:
        if self.models_dir is None:
            self.models_dir = self.data_dir / "models"
        return self

    @property
    def demo_dir(self) -> Path:
        """Where the generated demo dataset lives."""
        return self.data_dir / "demo"


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (e.g. ``--db``) on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
