{ config, pkgs, lib, ... }:
{
  # Per-agent overrides for coder. This is a regular NixOS module
  # — add packages, services, modules, imports as needed.
  #
  # imports = [ ./extra-module.nix ];
  # environment.systemPackages = with pkgs; [ ];
}
