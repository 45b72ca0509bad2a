"""An advisor that forgot its base class: it derives from object."""


class WrongBase:
    name = "wrong_base"

    def select_victim(self, candidates):
        return candidates[0]
