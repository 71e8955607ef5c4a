"""What every training mode has unless it says otherwise (`Mode`), and the registry of modes by
name (`MODES`, filled by the family modules of this package). Torch-free: the option checks
read the modes' class-level facts before torch is loaded.
"""
from __future__ import annotations

from fkd_ffcv.defaults import CLASSES_FIELD
from fkd_ffcv.registry import Registry

MODES = Registry('training mode')


class Mode:
    """What every mode has unless it says otherwise: one crop per image, no teacher, no crop
    records, no state of its own. The facts are class-level, read by option_checks.check
    without making a mode; the trainer makes one per run (no arguments) and passes every
    method the run's context (`ctx`).

    Per-run facts are instance attributes, each None from the constructor and set by
    check_data/setup, which the trainer calls first, in this order, before any other method:
    `num_records` and `label_spec` (fkd, meal_v2), `dim` (ssl, online_ssl), `spec` and
    `teacher` (online modes), `discriminator` and `train_discriminator` (MEAL V2). `metrics` is
    the class's () unless setup gives the instance its own (MEAL V2 with a discriminator), and
    then every `loss` sets `step_metrics`."""
    needs_teacher = False  # the mode runs a teacher (--fkd.teacher)
    reads_records = False  # the mode replays the beton's crop records
    record_field = CLASSES_FIELD  # the record field it reads (with boxes and flags)
    starts_from_weights = False  # needs --model.weights, of the data set's class count
    sections = ()  # option sections only this mode may set (option_checks refuses them elsewhere)
    reads_labels = True  # the training batches carry hard labels (train_top1 is logged)
    probes = False  # validation measures frozen features (k-NN, linear probe), not top-1
    metrics = ()  # names of the step means `loss` leaves in `step_metrics`, logged per epoch
    step_metrics = None

    @classmethod
    def crops_per_image(cls, opts: dict) -> int:
        """K: crops per decoded image and pass (a pass is K epochs)."""
        return 1

    @classmethod
    def pass_plan(cls, opts: dict) -> list:
        """Crops per image of each pass, summing to the epochs: K for every pass. Raises
        ValueError when K does not divide the epochs."""
        k, epochs = cls.crops_per_image(opts), opts['training']['epochs']
        if epochs % k:
            raise ValueError(f"--training.epochs={epochs} is not a multiple of "
                             f"--fkd.num_crops={k}: a pass over the images with K crops each is "
                             f"K epochs (--fkd.single_crop_phases=true runs the rest with one "
                             f"crop)")
        return [k] * (epochs // k)

    def check_data(self, ctx) -> None:
        """Raise TrainingError where the training beton lacks what the mode reads."""

    def setup(self, ctx) -> None:
        """Load what the mode needs besides the student (a teacher)."""

    def student(self, ctx, model):
        """The student as the mode trains it, from the model build_model gave (the mode may
        replace its classifier)."""
        return model

    def probe_scores(self, ctx, model, normalise):
        """The validation line's numbers when the mode measures the student (`model`, in eval
        mode; `normalise` its input normalisation) by probing its features (a dict), or None
        for top-1/top-5 of its classifier."""
        return None

    def forwards(self) -> list:
        """(who, forward) of the models besides the student that see the training crops, for
        the trainer's check of every input side."""
        return []

    def parameter_groups(self, ctx) -> list:
        """Optimiser groups of the mode's own trained modules (a discriminator), after the
        student's; a group's 'lr_scale' multiplies the scheduled learning rate, and one marked
        'always' learns in model.head_epochs too, while the student's body waits."""
        return []

    def train_loader(self, ctx, num_crops: int, **common):
        """The training loader for passes of `num_crops` crops per image; `common` holds
        resolution, seed, workers and distributed."""
        raise NotImplementedError

    def unpack(self, batch) -> tuple:
        """A loader batch -> (uint8 images, targets for `loss`, hard labels for accuracy, or
        None in a mode that reads no labels)."""
        raise NotImplementedError

    def loss(self, ctx, logits, targets, images255, perm, lam):
        """The loss of a step. With mixing (perm is not None), images255 holds the mixed
        images, and `lam` is the weight of the unpermuted targets. A mode with `metrics` sets
        `self.step_metrics` to a tensor of their step means."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Extra state to checkpoint (a discriminator, an optimiser of its own, ...)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
