// Command unionfs mounts a union of directories: read-only lower layers under
// one writable upper layer, copy-on-write, as the storage of a container.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `unionfs: a copy-on-write union filesystem for container images

Usage:
  unionfs mount [flags] MOUNTPOINT     mount a union (see unionfs mount --help)
  unionfs umount MOUNTPOINT            unmount it and wait for the server to exit
  unionfs pull [--platform os/arch] REF        pull an image into the layer store
  unionfs images [--format json]       list the stored images
  unionfs rmi REF...                   remove images (and layers no image uses)
  unionfs diff UPPER|MOUNTPOINT > l.tar the changes as an OCI layer tar
  unionfs volume create|ls|inspect|rm|prune   manage named volumes
  unionfs inspect MOUNTPOINT           what a live mount stacks, as JSON
  unionfs ps                           the live mounts of this user
  unionfs info                         version, storage, kernel features
  unionfs -o OPTIONS MOUNTPOINT        mount, as podman/buildah call a mount_program
  unionfs SOURCE MOUNTPOINT -o OPTIONS mount, as mount(8) calls a fuse.unionfs fstab entry
  unionfs version                      print the version

Flags:
  -h, --help      this help
      --version   print the version
`

// errUsage marks an error that the usage text should follow.
var errUsage = errors.New("usage")

func main() {
	err := run(os.Args[1:])
	if err == nil {
		return
	}
	if errors.Is(err, errUsage) {
		fmt.Fprintf(os.Stderr, "unionfs: %s\n\n%s", strings.TrimSuffix(err.Error(), ": usage"), usage)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "unionfs: %v\n", err)
	os.Exit(1)
}

func run(args []string) error {
	// mount(8) runs /sbin/mount.fuse.unionfs SOURCE MOUNTPOINT -o OPTS.
	if strings.HasPrefix(filepath.Base(os.Args[0]), "mount.") {
		return mountHelperCmd(args)
	}
	if len(args) == 0 {
		return fmt.Errorf("no command given: %w", errUsage)
	}
	if handled, err := imageCommand(args[0], args[1:]); handled {
		return err
	}
	switch args[0] {
	case "mount":
		return mountCmd(args[1:])
	case "umount", "unmount":
		return umountCmd(args[1:])
	case "volume":
		return volumeCmd(args[1:])
	case "inspect":
		return inspectCmd(args[1:])
	case "ps", "mounts":
		return psCmd(args[1:])
	case "info":
		return infoCmd(args[1:])
	case "version", "--version", "-V":
		fmt.Printf("unionfs %s\n", version)
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	// The two forms without a subcommand share the mount code path:
	// "-o OPTS MOUNTPOINT" (podman) and "SOURCE MOUNTPOINT -o OPTS" (mount(8)).
	if strings.HasPrefix(args[0], "-") {
		return mountCmd(args)
	}
	if len(args) >= 2 {
		return mountHelperCmd(args)
	}
	return fmt.Errorf("unknown command %q: %w", args[0], errUsage)
}
