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
    trust = "model_upload_trust"
    data_choice = "data_choice"
    data_root = "data_root"
    data_limit = "data_limit"

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

    # sensitivity page (prefix "sens_")
    sens_layers = "sens_layers"
    sens_levels = "sens_levels"
    sens_subset = "sens_subset"
    sens_early_stop = "sens_early_stop"
    sens_run = "sens_run"
    sens_target = "sens_target"
    sens_strategies = "sens_strategies"
    sens_edit = "sens_edit"
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

    # learn page
    learn_sparsity = "learn_sparsity"
    learn_layer_sparsity = "learn_scope_sparsity"

    # export page (prefix "export_")
    export_source = "export_source"
    export_sparsity = "export_sparsity"
    export_recipe = "export_recipe"
    export_bits = "export_bits"
    export_batches = "export_batches"
    export_speed_run = "export_speed_run"
    export_speed_result = "export_speed_result"
    export_prepare = "export_prepare"
    export_files = "export_files"

    # shared results
    masks = "current_masks"
    masks_label = "current_masks_label"
    recipe = "current_recipe"  # the Recipe that reproduces the current masks, or None

    # long jobs (prunelab.ui.jobs)
    jobs_folder = "jobs_folder"  # the session's private folder of checkpoints
    jobs_estimates = "jobs_estimates"  # {(job prefix, settings): Estimate}, timed once
