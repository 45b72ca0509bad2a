"""A sched advisor whose select_next raises an exception that is dangerous to
describe: a `BombError` whose __str__ and __repr__ go off (`wrapped=False`), or a
plain ValueError whose argument's __str__ and __repr__ do (`wrapped=True`).  They
go off as `how` says: raise, exit or hang."""

from adversary import Bomb, BombError

from kernel.mlaas import SchedAdvisor


class RaisesBombError(SchedAdvisor):
    name = "raises_bomb_error"
    params = {"how": "raise", "wrapped": False}

    def select_next(self, candidates, cpu):
        how = self.ctx.params["how"]
        if self.ctx.params["wrapped"]:
            raise ValueError(Bomb(how))
        raise BombError(how)
