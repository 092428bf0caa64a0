"""The networks: the DDPM U-Net (`unet`) and the toy problems' MLP (`toy_models`). Both ship to the Hub as they are."""
