"""``config``: change an image's configuration (entrypoint, env, labels...) without a layer.

The edit itself is :func:`layouttool.mutate.edit_config` (the Dockerfile / ``umoci config``
meanings); this module reads the image, stamps the time and commits the result
(:func:`layouttool.ops.edit.commit`): a new config and manifest, the indexes above it, and the
ref moved in one ``index.json`` update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layouttool.errors import InvalidInputError
from layouttool.model import Platform
from layouttool.mutate import ConfigEdit, check_created, edit_config
from layouttool.ops.edit import ImageUpdate, check_tag, commit, open_base, source_date_epoch
from layouttool.ops.edit import timestamp as _timestamp


@dataclass(frozen=True, slots=True)
class ConfigResult:
    """What ``config`` changed."""

    image: str
    update: ImageUpdate
    #: the config fields whose value changed (``Entrypoint``, ``Env``, ``architecture``...)
    changed: tuple[str, ...]
    created: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "image": self.image,
            **self.update.to_json(),
            "changed": list(self.changed),
            "created": self.created,
            "notes": list(self.notes),
        }


def configure_image(
    image: str,
    edit: ConfigEdit,
    *,
    tag: str | None = None,
    platform: Platform | None = None,
) -> ConfigResult:
    """Apply ``edit`` to IMAGE's config and point its ref (or ``tag``) at the result.

    The edit's time (the config's ``created`` and the new history entry's) is ``--created``
    when given, else ``SOURCE_DATE_EPOCH`` when set, else now.
    """
    if edit.is_empty():
        raise InvalidInputError(
            "config: nothing to change; give an option such as --entrypoint, --env or --label"
        )
    check_tag(tag)
    created = check_created(edit.created) if edit.created else _timestamp(source_date_epoch())
    base = open_base(image, platform)
    new = edit_config(base.config.doc, edit, created=created)
    with base.layout.writing():
        update = commit(base, new.doc, tag=tag)
    return ConfigResult(image, update, new.changed, created, new.notes)
