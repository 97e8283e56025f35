"""Every session-state key the app uses, in one place."""

from __future__ import annotations


class Keys:
    """Widget keys and session-state entries (each page reads state only through these)."""

    # sidebar: model and data
    model_source = "model_source"
    sample = "model_sample"
    torchvision_arch = "model_torchvision"
    upload = "model_upload"
    upload_arch = "model_upload_arch"
    upload_num_classes = "model_upload_num_classes"
    upload_input = "model_upload_input"
    trust = "model_upload_trust"
    data_choice = "data_choice"
    data_root = "data_root"
    data_limit = "data_limit"
    data_upload = "data_upload"
    # uploaded files kept for the whole session (a file uploader forgets its file when the
    # page changes): a prunelab.ui.sidebar.KeptFile, the button keys, the replacing flag
    model_file = "model_file"
    data_file = "data_file"
    # + _replace / _clear: the buttons beside "Using uploaded file ..."; + _replacing: the
    # uploader is shown again to replace the kept file

    # prune page
    strategy = "prune_strategy"
    granularity = "prune_granularity"
    norm_p = "prune_norm_p"
    nm_pattern = "prune_nm"
    layers = "prune_layers"
    drive = "prune_drive"
    sparsity = "prune_sparsity"
    threshold = "prune_threshold"
    seed = "prune_seed"
    focus = "prune_focus_layer"
    view = "prune_view"  # which figure of the focus layer is drawn (one at a time)
    heatmap_layout = "prune_heatmap_layout"
    compare = "prune_compare"
    evaluate_now = "prune_evaluate"
    prune_outputs = "prune_outputs"  # channel pruning: the model's output layers too

    # activations page (prefix "act_": add more here as needed)
    act_layer = "act_layer"
    act_threshold = "act_threshold"
    act_aggregate = "act_aggregate"
    act_reduce = "act_reduce"
    act_mask_fn = "act_mask_fn"
    act_per_feature = "act_per_feature"
    act_sparsity_level = "act_sparsity_level"
    act_with_masks = "act_with_masks"
    act_log_y = "act_log_y"
    act_mask_threshold = "act_mask_threshold"
    act_sparsify_run = "act_sparsify_run"
    act_sparsified = "act_sparsified"  # settings the sparsifier ran with (a cache.Bounded)

    # sensitivity page (prefix "sens_")
    sens_layers = "sens_layers"
    sens_prune_outputs = "sens_prune_outputs"
    sens_levels = "sens_levels"
    sens_subset = "sens_subset"
    sens_early_stop = "sens_early_stop"
    sens_run = "sens_run"
    sens_target = "sens_target"
    sens_strategies = "sens_strategies"
    sens_edit = "sens_edit"
    sens_budget = "sens_budget"
    sens_evaluations = "sens_evaluations"
    sens_allocations = "sens_allocations"
    # the page's two long jobs (prunelab.ui.jobs): their controls' keys are the prefix plus
    # _run, _resume, _restart, _confirm and _cancel
    sens_job = "sens"
    sens_resume = "sens_resume"
    sens_restart = "sens_restart"
    sens_confirm = "sens_confirm"
    sens_cancel = "sens_cancel"
    sens_compare_job = "sens_compare"
    sens_compare_run = "sens_compare_run"

    # train page (prefix "train_")
    train_source = "train_source"
    train_sparsity = "train_sparsity"
    train_recipe = "train_recipe"
    train_epochs = "train_epochs"
    train_lr = "train_lr"
    train_optimizer = "train_optimizer"
    train_kind = "train_kind"
    train_freeze = "train_freeze_"  # + the layer's module fqn, one checkbox per layer
    train_run = "train_run"

    # model page
    model_focus = "model_focus_layer"

    # train page: chosen bits, gradual schedule window, the run as a job (cancel)
    train_bits = "train_bits"
    train_window = "train_window"
    train_job = "train_job"  # prunelab.ui.jobs prefix: Cancel is "train_job_cancel"
    train_sequences = "train_sequences"  # a language model's training sequences

    # export page (prefix "export_")
    export_source = "export_source"
    export_sparsity = "export_sparsity"
    export_recipe = "export_recipe"
    export_bits = "export_bits"
    export_evaluate = "export_evaluate"
    export_batches = "export_batches"
    export_speed_run = "export_speed_run"
    export_speed_result = "export_speed_result"  # the last speed report (a cache.Bounded)
    export_prepare = "export_prepare"
    export_files = "export_files"  # the last files prepared (a cache.Bounded)

    # shared results
    masks = "current_masks"
    masks_label = "current_masks_label"
    recipe = "current_recipe"  # builds the Recipe of the current masks when called, or None

    # long jobs (prunelab.ui.jobs)
    jobs_folder = "jobs_folder"  # the session's private folder of checkpoints
    jobs_estimates = "jobs_estimates"  # (job prefix, settings) -> Estimate, a cache.Bounded
