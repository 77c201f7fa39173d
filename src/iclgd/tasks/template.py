"""Templates over a row's fields: "Sentence: {sentence} Label:" filled with the row's raw text.

A template is a Python format string whose placeholders are plain field names of the dataset's rows
(``{sentence}``, ``{premise}``). Literal braces are written ``{{`` and ``}}``. The raw text is inserted
untouched: no stripping, no normalising (GLUE SST-2 sentences end with a space, and stay so).
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterable
from typing import TYPE_CHECKING

from iclgd.errors import UserError

if TYPE_CHECKING:
    from iclgd.tasks.loading import Example


def template_fields(template: str, *, where: str = "template", example_field: str | None = None) -> tuple[str, ...]:
    """The field names a template fills, in order of first use; UserError if it fills none or uses a
    placeholder that is not a plain field name (``{}``, ``{0}``, ``{text.upper}``, ``{text[0]}``). The error's
    example template uses ``example_field`` (a field the rows have) where one is known."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise UserError(f"{where}: template {template!r} is not a valid format string ({err}); "
                        "write literal braces as '{{' and '}}'") from None
    fields: list[str] = []
    for _literal, field, _spec, _conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier():
            raise UserError(f"{where}: template {template!r} has placeholder {{{field}}}; placeholders must be "
                            "plain field names of the rows, e.g. {sentence}")
        if field not in fields:
            fields.append(field)
    if not fields:
        example = (f"e.g. '{example_field.capitalize()}: {{{example_field}}} Label:'" if example_field
                   else "e.g. 'Sentence: {sentence} Label:' with a field the rows have")
        if "{{" in template:  # lm-evaluation-harness writes Jinja; a format string reads {{ }} as literal braces
            raise UserError(f"{where}: template {template!r} is Jinja ({{{{text}}}}); iclgd's templates are Python "
                            f"format strings, whose {{{{ }}}} are literal braces: write {{text}}, {example}")
        raise UserError(f"{where}: template {template!r} has no placeholder for the row's fields; add one, {example}")
    return tuple(fields)


def validate_template(template: str, available: Iterable[str], *, where: str = "template",
                      label_fields: Iterable[str] = ()) -> None:
    """UserError naming the template and the first field it uses that the rows do not have, or that holds their
    label (``label_fields``: the label and label-name columns)."""
    available = tuple(available)
    for field in template_fields(template, where=where, example_field=available[0] if available else None):
        if field in tuple(label_fields):
            raise UserError(f"{where}: template {template!r} fills the label field {{{field}}}, which would show "
                            "each query its answer: a template is the input only, and the label word follows it from "
                            f"the task's label words; drop {{{field}}}")
        if field not in available:
            raise UserError(f"{where}: template {template!r} uses field {{{field}}}, which the rows do not have "
                            f"(fields: {', '.join(available) or 'none'})")


def render_input(template: str, example: Example) -> str:
    """The filled template, e.g. ``"Sentence: it 's good .  Label:"``: placeholders replaced by the row's
    raw field text (``example.text_fields``)."""
    validate_template(template, example.text_fields)
    for field in template_fields(template):
        if example.text_fields[field] is None:
            raise UserError(f"row {example.row} has no text in field {{{field}}} (missing, empty, null, NaN, or a "
                            f"list or object in the data file), which template {template!r} fills: fill or drop "
                            "that row")
    return template.format_map(example.text_fields)


def template_key(template: int | str) -> int:
    """The ``template`` column of a unit's rows: the task file's template index, or for a template string of one's
    own a negative id drawn from its sha256, so that two different strings never share a key (and are never pooled
    as if they were seeds of one condition) while the same string keys the same in every run."""
    if isinstance(template, int):
        return template
    return -1 - int(hashlib.sha256(template.encode()).hexdigest()[:12], 16)
