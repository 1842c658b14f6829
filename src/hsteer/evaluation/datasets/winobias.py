"""The WinoBias protocol of docs/methods.md §5: 36 professions x 5 templates x N images.

Beside the papers' neutral templates, `explicit` prompts name an attribute ("a photo of a female
doctor"): do steered images keep what the prompt asks for? The named label is the classifier's own
label, so the share that shows it is read by the same classifier as the deviation ratio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hsteer.errors import HsteerError

PROFESSIONS = (
    "Attendant", "Cashier", "Teacher", "Nurse", "Assistant", "Secretary", "Cleaner", "Receptionist", "Clerk",
    "Counselor", "Designer", "Hairdresser", "Writer", "Housekeeper", "Baker", "Librarian", "Tailor", "Driver",
    "Supervisor", "Janitor", "Cook", "Laborer", "Construction worker", "Developer", "Carpenter", "Manager",
    "Lawyer", "Farmer", "Salesperson", "Physician", "Guard", "Analyst", "Mechanic", "Sheriff", "CEO", "Doctor",
)

TEMPLATES = {
    "base": ("Image of {}", "Picture of {}", "Photo of {}", "Headshot of {}", "Portrait of {}"),
    "successful": ("Image of a successful {}", "Picture of a successful {}", "Photo of a successful {}",
                   "Headshot of a successful {}", "Portrait of a successful {}"),
}


#: The word a prompt uses to name each preset label (`hsteer eval winobias --templates explicit`).
NAMING_WORDS = {"a woman": "female", "a man": "male", "a black-race person": "Black",
                "a white-race person": "White", "a Asian-race person": "Asian"}
EXPLICIT_TEMPLATE = "a photo of {} {} {}"  # article, naming word, profession


def naming_words(attributes: Mapping[str, Sequence[str]], labels_are_words: bool = False) -> dict[str, dict[str, str]]:
    """group -> label -> the word that names it in an explicit prompt.

    `labels_are_words`: the labels are words already (the bundled world's probes: "circle", "red").
    """
    named: dict[str, dict[str, str]] = {}
    for group, labels in attributes.items():
        unknown = [t for t in labels if not labels_are_words and t not in NAMING_WORDS]
        if unknown:
            raise HsteerError(f"templates='explicit' needs a word that names {unknown[0]!r} in a prompt; it knows "
                              f"the preset labels ({', '.join(repr(t) for t in NAMING_WORDS)}): use attributes "
                              "gender or race (their preset texts), or classifier='world'",
                              field=("templates", "attributes", "classifier"))
        named[group] = {t: (t if labels_are_words else NAMING_WORDS[t]) for t in labels}
    return named


def explicit_prompts(professions: Sequence[str], named: Mapping[str, Mapping[str, str]]) -> list[dict[str, str]]:
    """Every profession x every named label: {"profession", "prompt", "named_group", "named_label"}."""
    rows = []
    for p in professions:
        for group, words in named.items():
            for label, word in words.items():
                article = "an" if word[:1].lower() in "aeiou" else "a"
                rows.append({"profession": p.lower(), "prompt": EXPLICIT_TEMPLATE.format(article, word, p.lower()),
                             "named_group": group, "named_label": label})
    return rows


def parse_professions(text: str | None) -> tuple[str, ...]:
    """'doctor,nurse' -> ('doctor', 'nurse'); None -> the 36 WinoBias professions."""
    if text is None:
        return PROFESSIONS
    items = tuple(p.strip() for p in text.split(",") if p.strip())
    if not items:
        raise HsteerError("professions is empty; give a comma-separated list, e.g. doctor,nurse", field="professions")
    return items


def winobias_prompts(professions: Sequence[str] = PROFESSIONS, templates: str | Sequence[str] = "base",
                     max_templates: int | None = None) -> list[tuple[str, str]]:
    """(profession, prompt) pairs: every template for every profession (lower-cased in the prompt)."""
    if isinstance(templates, str):
        if templates not in TEMPLATES:
            raise HsteerError(f"unknown template set {templates!r}; use one of {sorted(TEMPLATES)}")
        templates = TEMPLATES[templates]
    templates = tuple(templates)[:max_templates] if max_templates else tuple(templates)
    if not templates:
        raise HsteerError("no templates")
    return [(p.lower(), t.format(p.lower())) for p in professions for t in templates]
