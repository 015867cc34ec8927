{
  description = "hivegen: run a hive of AI agents in NixOS containers";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # tests/test_project_flake.py runs exactly these with no git or nix on PATH.
      offlineTests = [
        "tests/test_cli.py"
        "tests/test_config.py"
        "tests/test_init_and_lock.py"
        "tests/test_names.py"
        "tests/test_safepath.py"
        "tests/test_sanitize.py"
      ];
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.python3Packages.buildPythonApplication {
          pname = "hivegen";
          version = "0.1.0";
          pyproject = true;
          src = self;
          # As pyproject.toml's [build-system]: the pypa build hook runs without isolation.
          build-system = with pkgs.python3Packages; [ setuptools wheel ];
          dependencies = with pkgs.python3Packages; [ aiohttp jinja2 pygments shtab ];
          # Completions and hivegen(1), generated from the parser by the built hivegen
          # (the install hook has put $out's site-packages on PYTHONPATH by now).
          nativeBuildInputs = [ pkgs.installShellFiles ];
          postInstall = ''
            installShellCompletion --cmd hivegen \
              --bash <($out/bin/hivegen completion bash) \
              --zsh <($out/bin/hivegen completion zsh) \
              --fish <($out/bin/hivegen completion fish)
            $out/bin/hivegen man > hivegen.1
            installManPage hivegen.1
          '';
          nativeCheckInputs = [ pkgs.python3Packages.pytestCheckHook pkgs.python3Packages.hypothesis pkgs.python3Packages.jsonschema pkgs.git pkgs.nix ];
          # The suite drives a real nix store and git repos: run it in CI, not in the sandbox.
          doCheck = false;
          # hivegen calls git and nix (and, on NixOS, nixos-container and systemctl from the
          # system profile). Appended, not prepended: on a NixOS host the system's own nix
          # (the one nix-daemon runs and nixos-container builds with) comes first, so the
          # meta flake is locked and built by one nix; ours is only a fallback, so that
          # `nix run` works on a host without one.
          makeWrapperArgs = [ "--suffix" "PATH" ":" (pkgs.lib.makeBinPath [ pkgs.git pkgs.nix ]) ];
          meta.mainProgram = "hivegen";
          passthru.tests.unit = pkgs.runCommand "hivegen-unit-tests" {
            nativeBuildInputs = [
              (pkgs.python3.withPackages (ps: with ps; [ aiohttp jinja2 pygments shtab pytest hypothesis jsonschema ]))
            ];
          } ''
            cp -r ${self} src && chmod -R u+w src && cd src
            HOME=$TMPDIR python -m pytest -q -p no:cacheprovider ${pkgs.lib.concatStringsSep " " offlineTests}
            touch $out
          '';
        };
      });

      # `nix flake check`: the package builds, and the tests that need neither git, nix
      # nor a network pass in the sandbox. The rest drive a real nix store and git repos:
      # README's test command runs them (CI does).
      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.system}.default;
        unit = self.packages.${pkgs.system}.default.tests.unit;
      });

      # services.hivegen (nix/module.nix), with this flake's package as its default.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.hivegen.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.system}.default}/bin/hivegen";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.python3.withPackages (ps: with ps; [ aiohttp jinja2 pygments shtab pytest hypothesis jsonschema mypy types-pygments ]))
            pkgs.ruff
            pkgs.git
            pkgs.nix
          ];
        };
      });
    };
}
