"""The parameter and attribute documentation the probes share, spliced into each probe's docstring."""

__all__ = ["SHARED_ATTRIBUTES_DOC", "SHARED_PARAMETERS_DOC", "with_shared_parameters_doc"]

SHARED_PARAMETERS_DOC = """prefix_tokens : int, default=0
        Number of leading non-patch tokens in ``X`` (``[cls]``, distillation or
        register tokens). They are excluded from patch pooling.
    loss : {"auto", "asl", "bce", "ce"}, default="auto"
        Training loss. ``"auto"`` is ``"asl"`` (asymmetric loss) for multi-label
        ``y`` and ``"ce"`` (softmax cross-entropy) for binary or multi-class
        ``y``. ``"asl"`` and ``"bce"`` on single-label ``y`` train one sigmoid per
        class; ``predict_proba`` then normalises the rows.
    asl_gamma_neg, asl_gamma_pos, asl_clip : float, default=4.0, 1.0, 0.05
        Asymmetric-loss focusing exponents and negative margin (Bird-MAE's
        values). ``(0, 0, 0)`` equals ``"bce"``.
    weight_decay : float
        AdamW weight decay (prototypes are excluded).
    max_iter : int or "auto", default="auto"
        Training epochs. ``"auto"`` is 30 epochs (the paper's), or more on
        small sets so that training takes at least a minimum number of
        optimiser steps: 0 for the linear probe (30 epochs, or 90 where its
        ``cv`` chooses them), 480 for the attentive and 720 for the
        prototypical probe (their attention
        and prototypes need more steps on long token maps than small sets
        give in 30 epochs: see ``docs/benchmarks/defaults.md``), and at most
        90 epochs. With the default batch size, 600 clips train for 60 / 90
        epochs, and sets of about 3,000 clips or more for 30. The attentive
        probe, on sets of 200 clips or more where the minimum needs more
        than 30 epochs, chooses between 30 epochs and the minimum by the
        macro average precision of 20 % of the clips held out
        (``length_results_``) and trains on all clips for the winner. The
        resolved value is ``max_iter_``.
    batch_size : int or "auto", default="auto"
        Clips per optimisation step. ``"auto"`` is ``n_clips / 8`` clipped to
        [32, 128], so that an epoch has at least 8 steps where the set
        allows it (small sets then get enough optimiser steps: 200 clips
        give 210 steps in 30 epochs instead of 60) and sets of 1,024 clips
        or more train with batches of 128. Also the inference batch size
        (128 for ``"auto"``).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training clips (stratified for
        single-label ``y``), stop after ``n_iter_no_change`` epochs without a
        relative improvement of ``tol`` in validation loss, and keep the best
        epoch's weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=5
    tol : float, default=1e-4
    normalize_tokens : {"auto", "center", "standard", "scale", "none"}
        Input normalisation with statistics of the training set, fixed
        before training and kept in the fitted network (the choice made is
        ``normalize_tokens_``). ``"center"`` subtracts the per-dimension mean
        and divides by one global scale (the root-mean-square deviation over
        all dimensions): it keeps the geometry of the tokens and makes the
        probe invariant to the encoder's token offset and scale, so one
        learning rate serves every token scale. ``"scale"`` only divides by
        the root mean square of the values. ``"standard"`` divides each
        dimension by its own standard deviation (``StandardScaler``).
        ``"none"`` feeds the raw tokens (the paper's recipe). ``"auto"``
        (the default) is, for the attentive probe, ``"center"`` when the
        tokens share a common offset (``|mean|^2`` over a quarter of their
        total variance), for the prototypical probe ``"center"`` when they
        crowd around one direction (mean cosine similarity to their mean
        above 0.67), and ``"scale"`` otherwise; on sets of 200 to 3,000
        clips both check the rule on held-out clips against the other two of
        ``"scale"``, ``"center"`` and ``"standard"``, which must beat it by
        more than a margin of macro average precision (0.02 for the
        attentive, 0.05 for the prototypical probe;
        ``normalization_results_``);
        for the linear probe, ``"standard"``
        for its logistic regression, and ``"center"`` or ``"standard"`` as
        its ``cv`` chooses for AdamW (``"center"`` without ``cv``). The attentive and
        prototypical probes normalise the patch tokens; the linear probe
        normalises its pooled feature vector. Chosen on the panel of
        ``benchmarks/bench_defaults_panel.py`` (see
        ``docs/benchmarks/defaults.md``).
    device : str, default="auto"
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``. Resolved at each ``fit``/``predict``, so a probe fitted
        on a GPU predicts on a CPU-only machine.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, shuffling and the validation split.
    verbose : int, default=0
        1 prints a line per epoch, 2 adds a progress bar."""


#: Fitted attributes every probe sets in ``fit`` (numpydoc lines, spliced into each probe's docstring).
SHARED_ATTRIBUTES_DOC = """module_ : torch.nn.Module
        The trained network (on CPU after ``fit``).
    target_type_ : {"binary", "multiclass", "multilabel"}
        The kind of ``y`` seen in ``fit`` (scikit-learn's ``type_of_target``;
        ``"multilabel"`` for a 0/1 indicator matrix): it decides the outputs'
        shapes and how ``predict_proba`` normalises.
    loss_ : str
        The resolved training loss.
    learning_rate_ : float
        The learning rate used (``"auto"`` resolved).
    normalize_tokens_ : str
        The input normalisation used (``"auto"`` resolved).
    max_iter_ : int
        Epochs planned (``"auto"`` resolved; ``n_iter_`` is lower after early stopping).
    n_iter_ : int
        Epochs run.
    batch_size_ : int
        Training batch size used (``batch_size="auto"`` resolved).
    n_steps_ : int
        Optimiser steps taken.
    loss_curve_ : list of float
        Mean training loss per epoch.
    validation_loss_curve_ : list of float or None
        Validation loss per epoch when ``early_stopping``.
    best_validation_loss_ : float or None
    n_trainable_parameters_ : int"""


def with_shared_parameters_doc(cls):
    """Class decorator: put :data:`SHARED_PARAMETERS_DOC` and :data:`SHARED_ATTRIBUTES_DOC` where the
    docstring says ``{shared_parameters}`` and ``{shared_attributes}``."""
    if cls.__doc__:
        cls.__doc__ = cls.__doc__.replace("{shared_parameters}", SHARED_PARAMETERS_DOC).replace(
            "{shared_attributes}", SHARED_ATTRIBUTES_DOC)
    return cls


