"""The pipelines (`pipeline_ddpm`, `pipeline_toy`) and what they share (`pipeline_utils`: the Hub mechanics, the
ε/variance split). All three ship to the Hub."""
