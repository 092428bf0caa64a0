"""The toy problems of Sohl-Dickstein et al. (2015): data, bound, training, figures and the tasks that join them.
Their network, scheduler and pipelines live with the others (`models.toy_models`, `schedulers.scheduling_binomial`,
`pipelines.pipeline_toy`)."""
