"""Print the README's settings table from `Settings`, so the docs match the code."""

from __future__ import annotations

from pydantic import SecretStr

from config.settings import Settings


def settings_table() -> str:
    rows = ["| variable | default | description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if field.annotation is not None and "SecretStr" in str(field.annotation):
            shown = "unset (secret)" if default is None else "set (secret)"
        elif default is None:
            shown = "unset"
        else:
            shown = f"`{default}`"
        if isinstance(default, SecretStr):
            shown = "set (secret)"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name.upper()}` | {shown} | {description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
