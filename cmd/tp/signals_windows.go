//go:build windows

package main

import "os"

func dieBy(os.Signal) {}
