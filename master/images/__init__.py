"""Guest images the master serves: ``saltmarsh image build`` and ``saltmarsh image list``.

    recipe.py    the typed recipe (release, size, packages, kernel, mirror, source) and its hash
    source.py    the saltmarsh source tree the guest's agent is built from, and its wheels
    guest.py     what goes into the guest: packages, config files, the mmdebstrap command
    disk.py      the bootable disk: MBR, a FAT /boot with SYSLINUX, the ext4 root (no loop, no mount)
    build.py     the stages, the workspace and its clean-up, publishing into the first file root
    catalog.py   every image under the file roots, with its checksum and the agents it was served to
    process.py   subprocesses with timeouts, killed with their process group when interrupted
    errors.py    ImageError and its subclasses
"""
