# hivegen's demo and tests rewrite this with the machine's own system.
"x86_64-linux"
