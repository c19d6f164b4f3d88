"""Plots and widgets for the notebooks.

:mod:`swiftlib.viz.plots`: pure plotting functions (data in, a matplotlib Figure out, no global state,
tested headlessly). :mod:`swiftlib.viz.widgets`: thin ipywidgets wrappers whose controls redraw those
figures. Everything is importable from ``swiftlib.viz``.
"""
from swiftlib.viz.plots import (SWEEP_STYLE, SWIFTFORMER_STAGE_TOKENS, VARIANT_STYLE, confusion_counts,
                                plot_accuracy_vs_latency, plot_attention_costs, plot_attention_maps,
                                plot_confusion_matrix, plot_device_vs_paper, plot_op_inventory, plot_predictions,
                                plot_stage_costs, plot_sweep, plot_training_curves, separate_labels, token_steps)
from swiftlib.viz.widgets import attention_bench_widget, attention_cost_widget, busy, swiftformer_cost_widget

__all__ = ["VARIANT_STYLE", "SWEEP_STYLE", "SWIFTFORMER_STAGE_TOKENS", "token_steps", "plot_attention_costs",
           "plot_attention_maps", "plot_sweep", "plot_stage_costs", "separate_labels", "plot_accuracy_vs_latency",
           "plot_training_curves", "confusion_counts", "plot_confusion_matrix", "plot_predictions",
           "plot_op_inventory", "plot_device_vs_paper", "attention_cost_widget", "attention_bench_widget",
           "swiftformer_cost_widget", "busy"]
