{
  description = "hyperhive agent";
  inputs = { };
  outputs =
    { self, ... }@inputs:
    {
      nixosModules.default = {
        imports = [ ./agent.nix ];
        _module.args.flakeInputs = builtins.removeAttrs inputs [ "self" ];
      };
    };
}
