package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

// `gust volume ...`, as Modal's `modal volume`: create, list, ls, put, get, rm, cp, delete
// and rename, through the Go SDK.

func init() {
	register(&command{name: "volume create", summary: "create a named Volume", run: runVolumeCreate})
	register(&command{name: "volume list", summary: "list named Volumes", run: runVolumeList})
	register(&command{name: "volume ls", summary: "list files and directories of a Volume", run: runVolumeLs})
	register(&command{name: "volume put", summary: "upload a file or directory to a Volume", run: runVolumePut})
	register(&command{name: "volume get", summary: "download a file or directory from a Volume", run: runVolumeGet})
	register(&command{name: "volume rm", summary: "delete a file or directory from a Volume", run: runVolumeRm})
	register(&command{name: "volume cp", summary: "copy files within a Volume", run: runVolumeCp})
	register(&command{name: "volume delete", summary: "delete a named Volume and its files", run: runVolumeDelete})
	register(&command{name: "volume rename", summary: "rename a Volume", run: runVolumeRename})
}

// volumeNamed finds a named Volume.
func volumeNamed(ctx context.Context, name string) (*gust.Volume, error) {
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return nil, err
	}
	return c.VolumeFromName(ctx, name, false)
}

func runVolumeCreate(ctx context.Context, args []string) error {
	fs := cliFlags("volume create", "NAME", "Creates a named Volume.")
	pos, err := namedArgs(fs, args, 1, 1, "volume create needs NAME")
	if err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	if _, err := c.CreateVolume(ctx, pos[0], false); err != nil {
		return err
	}
	fmt.Printf("Created Volume '%s'.\n", pos[0])
	return nil
}

func runVolumeList(ctx context.Context, args []string) error {
	fs := cliFlags("volume list", "[--json]", "Lists the named Volumes, newest first.")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := namedArgs(fs, args, 0, 0, "volume list takes no arguments"); err != nil {
		return err
	}
	c, err := gust.NewClientFromEnv()
	if err != nil {
		return err
	}
	vs, err := c.ListVolumes(ctx, gust.ObjectListOptions{})
	if err != nil {
		return err
	}
	rows := make([][]string, len(vs))
	for i, v := range vs {
		rows[i] = []string{v.Name, v.CreatedAt.Local().Format(time.DateTime), v.CreatedBy, humanBytes(v.Bytes)}
	}
	return printTable(os.Stdout, []string{"Name", "Created at", "Created by", "Size"}, rows, *asJSON)
}

func runVolumeLs(ctx context.Context, args []string) error {
	fs := cliFlags("volume ls", "NAME [PATH] [--json]", "Lists the files and directories under PATH (the root by default).")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := namedArgs(fs, args, 1, 2, "volume ls needs NAME and at most one PATH")
	if err != nil {
		return err
	}
	v, err := volumeNamed(ctx, pos[0])
	if err != nil {
		return err
	}
	p := "/"
	if len(pos) == 2 {
		p = pos[1]
	}
	es, err := v.ListDir(ctx, p, false)
	if err != nil {
		return err
	}
	rows := make([][]string, len(es))
	for i, e := range es {
		name := e.Path
		if e.Type == "directory" {
			name += "/"
		}
		rows[i] = []string{name, e.Type, time.Unix(e.Mtime, 0).Local().Format(time.DateTime), humanBytes(e.Size)}
	}
	return printTable(os.Stdout, []string{"Filename", "Type", "Created/Modified", "Size"}, rows, *asJSON)
}

func runVolumePut(ctx context.Context, args []string) error {
	fs := cliFlags("volume put", "NAME LOCAL [REMOTE] [--force]", "Uploads a local file or directory (with all it holds) to REMOTE in the Volume (the root by default; a REMOTE ending in / is a directory).")
	force := fs.Bool("force", false, "overwrite existing files")
	fs.BoolVar(force, "f", false, "same as --force")
	pos, err := namedArgs(fs, args, 2, 3, "volume put needs NAME, LOCAL and at most one REMOTE")
	if err != nil {
		return err
	}
	v, err := volumeNamed(ctx, pos[0])
	if err != nil {
		return err
	}
	local, remote := pos[1], "/"
	if len(pos) == 3 {
		remote = pos[2]
	}
	fi, err := os.Stat(local)
	if err != nil {
		return err
	}
	var files []gust.VolumeUpload
	var open []*os.File
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	add := func(p, dst string, mode iofs.FileMode) error {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		open = append(open, f)
		files = append(files, gust.VolumeUpload{Path: dst, Body: f, Mode: uint32(mode.Perm())})
		return nil
	}
	if !fi.IsDir() {
		dst := remote
		if strings.HasSuffix(remote, "/") {
			dst = path.Join(remote, filepath.Base(local))
		}
		if err := add(local, dst, fi.Mode()); err != nil {
			return err
		}
	} else {
		err := filepath.WalkDir(local, func(p string, d iofs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			rel, err := filepath.Rel(local, p)
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			return add(p, path.Join(remote, filepath.ToSlash(rel)), info.Mode())
		})
		if err != nil {
			return err
		}
	}
	if err := v.Upload(ctx, files, *force); err != nil {
		if errors.Is(err, gust.ErrConflict) {
			return fmt.Errorf("%w (pass --force to overwrite)", err)
		}
		return err
	}
	fmt.Printf("Uploaded %d file(s) to Volume '%s'.\n", len(files), pos[0])
	return nil
}

func runVolumeGet(ctx context.Context, args []string) error {
	fs := cliFlags("volume get", "NAME REMOTE [LOCAL] [--force]", "Downloads a file or directory of the Volume to LOCAL (the current directory by default; - writes a file to stdout).")
	force := fs.Bool("force", false, "overwrite existing local files")
	pos, err := namedArgs(fs, args, 2, 3, "volume get needs NAME, REMOTE and at most one LOCAL")
	if err != nil {
		return err
	}
	v, err := volumeNamed(ctx, pos[0])
	if err != nil {
		return err
	}
	local := "."
	if len(pos) == 3 {
		local = pos[2]
	}
	es, err := v.ListDir(ctx, pos[1], true)
	if err != nil {
		return err
	}
	if local == "-" {
		rc, err := v.ReadFile(ctx, pos[1])
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.Copy(os.Stdout, rc)
		return err
	}
	root := strings.Trim(path.Clean("/"+pos[1]), "/")
	single := len(es) == 1 && es[0].Type == "file" && es[0].Path == root
	for _, e := range es {
		if e.Type != "file" {
			continue
		}
		dst := filepath.Join(local, filepath.FromSlash(strings.TrimPrefix(strings.TrimPrefix(e.Path, root), "/")))
		if single {
			dst = local
			if st, err := os.Stat(local); err == nil && st.IsDir() {
				dst = filepath.Join(local, path.Base(e.Path))
			}
		}
		if err := download(ctx, v, e.Path, dst, *force); err != nil {
			return err
		}
	}
	return nil
}

func download(ctx context.Context, v *gust.Volume, remote, dst string, force bool) error {
	if _, err := os.Stat(dst); err == nil && !force {
		return fmt.Errorf("%s exists already (pass --force to overwrite)", dst)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	rc, err := v.ReadFile(ctx, remote)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func runVolumeRm(ctx context.Context, args []string) error {
	fs := cliFlags("volume rm", "NAME PATH [-r]", "Deletes a file, or a directory with -r.")
	rec := fs.Bool("r", false, "delete a directory and everything in it")
	fs.BoolVar(rec, "recursive", false, "same as -r")
	pos, err := namedArgs(fs, args, 2, 2, "volume rm needs NAME and PATH")
	if err != nil {
		return err
	}
	v, err := volumeNamed(ctx, pos[0])
	if err != nil {
		return err
	}
	return v.Remove(ctx, pos[1], *rec)
}

func runVolumeCp(ctx context.Context, args []string) error {
	fs := cliFlags("volume cp", "NAME SRC... DST [-r]", "Copies files within the Volume, as cp does.")
	rec := fs.Bool("r", false, "copy directories and everything in them")
	fs.BoolVar(rec, "recursive", false, "same as -r")
	pos, err := namedArgs(fs, args, 3, 1<<20, "volume cp needs NAME, at least one SRC and DST")
	if err != nil {
		return err
	}
	v, err := volumeNamed(ctx, pos[0])
	if err != nil {
		return err
	}
	return v.Copy(ctx, pos[1:len(pos)-1], pos[len(pos)-1], *rec)
}

func runVolumeDelete(ctx context.Context, args []string) error {
	fs := cliFlags("volume delete", "NAME [--yes]", "Deletes a named Volume and all its files.")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	fs.BoolVar(yes, "y", false, "same as --yes")
	pos, err := namedArgs(fs, args, 1, 1, "volume delete needs NAME")
	if err != nil {
		return err
	}
	v, err := volumeNamed(ctx, pos[0])
	if err != nil {
		return err
	}
	if err := confirm(*yes, fmt.Sprintf("Are you sure you want to irrevocably delete the Volume '%s' and all its files?", pos[0])); err != nil {
		return err
	}
	return v.Delete(ctx)
}

func runVolumeRename(ctx context.Context, args []string) error {
	fs := cliFlags("volume rename", "OLD NEW [--yes]", "Renames a Volume; code that names the old name will no longer find it.")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	fs.BoolVar(yes, "y", false, "same as --yes")
	pos, err := namedArgs(fs, args, 2, 2, "volume rename needs OLD and NEW")
	if err != nil {
		return err
	}
	v, err := volumeNamed(ctx, pos[0])
	if err != nil {
		return err
	}
	if err := confirm(*yes, fmt.Sprintf("Are you sure you want to rename the Volume '%s' to '%s'?", pos[0], pos[1])); err != nil {
		return err
	}
	return v.Rename(ctx, pos[1])
}
