"""The forward and reverse processes: DDPM (`scheduling_ddpm`, with schedules given by their log SNR in
`log_snr_schedules`), Analytic-DPM (`scheduling_analytic_dpm`, with its estimates in `analytic_variance`) and the
binomial chain (`scheduling_binomial`). The `scheduling_*` files ship to the Hub."""
