"""Label schemes: how a Kellgren-Lawrence grade (0-4) maps to a class index and a class name."""

from __future__ import annotations

from dataclasses import dataclass

from kneelib.errors import KneelibError

#: The KL grades every scheme maps (index into ``Scheme.grade_to_class``).
KL_GRADES: tuple[int, ...] = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Scheme:
    """A grade-to-class map: ``grade_to_class[kl]`` is the class index of KL grade ``kl``."""

    name: str
    class_names: tuple[str, ...]
    grade_to_class: tuple[int, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.grade_to_class) != len(KL_GRADES):
            raise ValueError(f"scheme {self.name}: grade_to_class needs one entry per KL grade")
        if sorted(set(self.grade_to_class)) != list(range(len(self.class_names))):
            raise ValueError(f"scheme {self.name}: every class needs at least one grade")

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.class_names)

    def encode(self, grade: int) -> int:
        """Class index of a KL grade; KneelibError for a grade outside 0-4."""
        if isinstance(grade, bool) or int(grade) != grade or not 0 <= int(grade) <= 4:
            raise KneelibError(f"KL grade {grade!r} is outside 0-4 (scheme {self.name})")
        return self.grade_to_class[int(grade)]

    def class_name(self, grade: int) -> str:
        """Name of the class a KL grade belongs to."""
        return self.class_names[self.encode(grade)]

    def grades_of(self, class_index: int) -> tuple[int, ...]:
        """The KL grades merged into one class."""
        return tuple(g for g in KL_GRADES if self.grade_to_class[g] == class_index)


_SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("kl5", ("0", "1", "2", "3", "4"), (0, 1, 2, 3, 4), "the five KL grades 0-4"),
        Scheme("kl4", ("0-1", "2", "3", "4"), (0, 0, 1, 2, 3), "KL0 and KL1 merged ('no OA'), then 2, 3, 4"),
        Scheme("oa", ("no OA", "OA"), (0, 0, 1, 1, 1), "binary: OA means KL >= 2"),
    )
}

#: Names accepted by :func:`get_scheme` (and by ``--scheme`` options).
SCHEME_NAMES: tuple[str, ...] = tuple(_SCHEMES)


def get_scheme(name: str | Scheme) -> Scheme:
    """The scheme called ``name`` (``kl5``, ``kl4`` or ``oa``); a Scheme is returned unchanged."""
    if isinstance(name, Scheme):
        return name
    try:
        return _SCHEMES[str(name).lower()]
    except KeyError:
        raise KneelibError(f"unknown label scheme {name!r} (choose from {', '.join(SCHEME_NAMES)})") from None
